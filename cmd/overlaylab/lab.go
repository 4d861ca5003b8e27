package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
)

func upCmd() *cobra.Command {
	s := lab.Spec{Out: os.Stdout, Verify: true}
	var endpoints string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build a lab: etcd, hosts with real agents, containers; then verify pings and the wire",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if endpoints != "" {
				s.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			s.Binary = bin
			_, err = lab.Up(cmd.Context(), s)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.Name, "name", lab.DefaultName, "lab name (lower-case letters and digits)")
	f.IntVar(&s.Hosts, "hosts", 3, "number of hosts")
	f.IntVar(&s.Containers, "containers", 2, "containers per host")
	f.StringVar(&s.Backend, "backend", "udp", "backend: udp, vxlan or host-gw")
	f.StringVar(&s.Network, "network", lab.DefaultNetwork, "overlay Network (CIDR)")
	f.IntVar(&s.SubnetLen, "subnet-len", 0, "SubnetLen (default: flannel's rule)")
	f.StringVar(&s.Underlay, "underlay", lab.DefaultUnderlay, "underlay CIDR")
	f.IntVar(&s.UnderlayMTU, "underlay-mtu", 0, "underlay MTU (default: kernel's 1500)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "use this external etcd (reached from the machine; proxied into the lab at the etcd address)")
	f.StringVar(&s.StateRoot, "state-dir", lab.DefaultStateRoot, "where labs keep their state")
	f.BoolVar(&s.Verify, "verify", true, "run the ping matrix and the wire check")
	f.StringArrayVar(&s.AgentArgs, "agent-arg", nil, "extra flag for every agent (repeatable)")
	f.IntVar(&s.EtcdMembers, "etcd-members", 1, "embedded etcd members (1, 3 or 5), each in its own namespace on the underlay")
	f.BoolVar(&s.EtcdTLS, "etcd-tls", false, "embedded etcd serves client TLS with client-certificate auth (CA and certificates in the state dir)")
	f.Int64Var(&s.Seed, "seed", 0, "seed the agents' subnet choice: the same seed gives the same subnets (0 = random)")
	return cmd
}

func downCmd() *cobra.Command {
	var name, root string
	var all bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a lab (idempotent); --all removes every lab and leftover",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("overlaylab down needs root to delete network namespaces: run it with sudo")
			}
			if all {
				labs, err := lab.DownAll(cmd.Context(), root)
				if len(labs) == 0 && err == nil {
					fmt.Println("nothing to remove")
				} else {
					fmt.Printf("removed: %s\n", strings.Join(labs, " "))
				}
				return err
			}
			if err := lab.Down(cmd.Context(), root, name); err != nil {
				return err
			}
			fmt.Printf("lab %q is down\n", name)
			return nil
		},
	}
	labFlags(cmd, &name, &root)
	cmd.Flags().BoolVar(&all, "all", false, "remove every lab and every ol-* leftover")
	return cmd
}

func statusCmd() *cobra.Command {
	var name, root, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a lab (-o json for the machine-readable contract)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "table" {
				return fmt.Errorf("-o %q: use json or table", output)
			}
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			case "", "table":
				fmt.Printf("lab %q: backend %s, network %s, phase %s, state %s\n", st.Name, st.Backend, st.Network, st.Phase, st.StateDir)
				lab.WriteTable(os.Stdout, st)
				return nil
			default:
				return fmt.Errorf("-o %q: use json or table", output)
			}
		},
	}
	labFlags(cmd, &name, &root)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or table")
	return cmd
}

func execCmd() *cobra.Command {
	var name, root string
	cmd := &cobra.Command{
		Use:   "exec HOST[/CONTAINER] -- CMD...",
		Short: "Run a command inside a host's or a container's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			nsName, err := resolveTarget(st, args[0])
			if err != nil {
				return err
			}
			c := exec.Command(args[1], args[2:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := nsutil.DoNamed(nsName, c.Start); err != nil {
				return fmt.Errorf("exec %s in %s: %w", args[1], nsName, err)
			}
			if err := c.Wait(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					return exitError{code: ee.ExitCode()}
				}
				return err
			}
			return nil
		},
	}
	labFlags(cmd, &name, &root)
	return cmd
}

// resolveTarget maps "h1", "h1/c2", "etcd" or "underlay" to a namespace.
func resolveTarget(st *lab.State, target string) (string, error) {
	switch target {
	case "etcd":
		return st.Etcd.Netns, nil
	case "underlay":
		return st.Underlay.Netns, nil
	}
	hostName, cName, hasC := strings.Cut(target, "/")
	h, ok := st.Host(hostName)
	if !ok {
		var names []string
		for _, h := range st.Hosts {
			names = append(names, h.Name)
		}
		return "", fmt.Errorf("%q: no host %q in lab %q (there are %s, etcd, underlay)", target, hostName, st.Name, strings.Join(names, ", "))
	}
	if !hasC {
		return h.Netns, nil
	}
	for _, c := range h.Containers {
		if c.Name == cName {
			return c.Netns, nil
		}
	}
	var names []string
	for _, c := range h.Containers {
		names = append(names, c.Name)
	}
	return "", fmt.Errorf("%q: host %s has no container %q (it has %s)", target, hostName, cName, strings.Join(names, ", "))
}

func etcdCmd() *cobra.Command {
	var o lab.EtcdOptions
	cmd := &cobra.Command{
		Use:    "etcd",
		Short:  "Run the lab's embedded etcd member (started by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, ip := range o.ClientIPs {
				if _, err := netip.ParseAddr(ip); err != nil {
					return fmt.Errorf("--client-ip %q: %w", ip, err)
				}
			}
			return lab.RunEtcd(o)
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "default", "member name")
	cmd.Flags().StringVar(&o.DataDir, "data-dir", "", "data directory")
	cmd.Flags().StringSliceVar(&o.ClientIPs, "client-ip", nil, "address to serve clients on, port 2379 (repeatable)")
	cmd.Flags().StringVar(&o.PeerIP, "peer-ip", "127.0.0.1", "address for the peer URL, port 2380")
	cmd.Flags().StringVar(&o.InitialCluster, "initial-cluster", "", "every member as name=http://ip:2380, comma-separated")
	cmd.Flags().StringVar(&o.CertFile, "cert-file", "", "server certificate (enables client TLS)")
	cmd.Flags().StringVar(&o.KeyFile, "key-file", "", "server key")
	cmd.Flags().StringVar(&o.TrustedCAFile, "trusted-ca-file", "", "CA that client certificates must be signed by")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func etcdProxyCmd() *cobra.Command {
	var nsName, listen, target string
	cmd := &cobra.Command{
		Use:    "etcd-proxy",
		Short:  "Forward the lab's etcd address to an external etcd (started by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.RunProxy(nsName, listen, target)
		},
	}
	cmd.Flags().StringVar(&nsName, "netns", "", "namespace to listen in")
	cmd.Flags().StringVar(&listen, "listen", "", "address:port to listen on")
	cmd.Flags().StringVar(&target, "target", "", "external etcd host:port")
	return cmd
}

// labFlags adds --name and --state-dir, which every lab command takes.
func labFlags(cmd *cobra.Command, name, root *string) {
	cmd.Flags().StringVar(name, "name", lab.DefaultName, "lab name")
	cmd.Flags().StringVar(root, "state-dir", lab.DefaultStateRoot, "where labs keep their state")
}
