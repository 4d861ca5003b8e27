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
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// upFlags are up's flags before they become a plan.Spec.
type upFlags struct {
	spec      plan.Spec
	networks  []string
	backend   string
	subnetLen int
	underlay  string
	endpoints string
	agents    []string
	runtime   string
	root      string
	verify    bool
}

func upCmd() *cobra.Command {
	var u upFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build a lab: etcd, hosts with real agents, containers; then verify pings and the wire",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := u.toSpec()
			if err != nil {
				return err
			}
			l, err := lab.Up(cmd.Context(), u.root, spec, lab.UpOptions{Options: lab.Options{Out: os.Stdout, Command: "up"}, Verify: u.verify})
			if l != nil {
				l.Close()
			}
			return err
		},
	}
	f := cmd.Flags()
	s := &u.spec
	f.StringVar(&s.Name, "name", plan.DefaultName, "lab name (up to 32 of a-z, 0-9 and '-', starting with a letter)")
	f.IntVar(&s.Hosts, "hosts", plan.DefaultHosts, "number of hosts")
	f.IntVar(&s.Containers, "containers", plan.DefaultContainers, "containers per host (per network with several networks)")
	f.StringVar(&u.backend, "backend", config.BackendUDP, "backend: "+config.BackendUDP+", "+config.BackendVXLAN+" or "+config.BackendHostGW)
	f.StringArrayVar(&u.networks, "network", nil, "overlay Network CIDR (default "+plan.DefaultNetwork+", wider when the hosts need it), or NAME=CIDR, repeatable, for tenant networks on the same hosts")
	f.IntVar(&u.subnetLen, "subnet-len", 0, "SubnetLen (default: flannel's rule)")
	f.StringVar(&u.underlay, "underlay", plan.DefaultUnderlay, "underlay CIDR (host i gets its i-th address; e.g. 172.20.0.0/16 for up to 65000 hosts)")
	f.IntVar(&s.UnderlayMTU, "underlay-mtu", 0, "underlay MTU (default: the kernel's 1500)")
	f.StringVar(&u.endpoints, "etcd-endpoints", "", "use this external etcd (reached from the machine; proxied into the lab at the etcd address)")
	f.StringVar(&u.root, "state-dir", plan.DefaultStateRoot, "where labs keep their state")
	f.BoolVar(&u.verify, "verify", true, "run the ping matrix and the wire check")
	f.StringArrayVar(&s.AgentArgs, "agent-arg", nil, "extra flag for every agent (repeatable)")
	f.StringArrayVar(&u.agents, "agent", nil, "agent binary for every host (PATH), or for one (hN=PATH); repeatable; default overlaylab's own")
	f.StringVar(&u.runtime, "runtime", string(plan.RuntimeBridge), "how containers attach: bridge (the lab's own, from subnet.env) or cni (the CNI flannel plugin, bridge and host-local from bin/cni)")
	f.StringVar(&s.CNIDir, "cni-dir", "", "CNI plugins for --runtime cni (default: bin/cni beside this binary, then /opt/cni/bin)")
	f.IntVar(&s.Etcd.Members, "etcd-members", 1, "embedded etcd members (1, 3 or 5), each in its own namespace on the underlay")
	f.BoolVar(&s.Etcd.TLS, "etcd-tls", false, "embedded etcd serves client TLS with client-certificate auth (CA and certificates in the state dir)")
	f.Int64Var(&s.Seed, "seed", 0, "seed overlaylab agents' subnet choice: the same seed gives the same subnets (0 = random)")
	return cmd
}

// toSpec turns the flags into a spec; every error names its flag.
func (u *upFlags) toSpec() (plan.Spec, error) {
	s := u.spec
	ul, err := netip.ParsePrefix(strings.TrimSpace(u.underlay))
	if err != nil || !ul.Addr().Is4() {
		return s, fmt.Errorf("--underlay %q: not an IPv4 CIDR (want e.g. %s)", u.underlay, plan.DefaultUnderlay)
	}
	if ul.Masked() != ul {
		return s, fmt.Errorf("--underlay %s: host bits must be zero (did you mean %s?)", ul, ul.Masked())
	}
	s.Underlay = ul
	if u.endpoints != "" {
		s.Etcd.Endpoints = splitList(u.endpoints)
	}
	if s.Runtime, err = plan.ParseRuntime(u.runtime); err != nil {
		return s, err
	}
	if s.Networks, err = parseNetworks(u.networks, s.Hosts, u.subnetLen, u.backend); err != nil {
		return s, err
	}
	if err := parseAgents(&s, u.agents); err != nil {
		return s, err
	}
	return s, nil
}

// parseNetworks reads --network: one CIDR, or several NAME=CIDR. Tenant
// networks get distinct VNIs (vxlan) or ports (udp), counting up from
// flannel's defaults.
func parseNetworks(flags []string, hosts, subnetLen int, backend string) ([]plan.Network, error) {
	if len(flags) == 0 {
		flags = []string{plan.DefaultNetworkFor(hosts)}
	}
	var out []plan.Network
	for k, v := range flags {
		name, cidr, named := strings.Cut(v, "=")
		if !named {
			name, cidr = "", v
			if len(flags) > 1 {
				return nil, fmt.Errorf("--network %s: with several networks, name each one (--network red=10.10.0.0/16 --network blue=10.10.0.0/16)", v)
			}
		}
		n, err := plan.NewNetwork(name, cidr, subnetLen, backend)
		if err != nil {
			return nil, err
		}
		if named {
			if err := plan.CheckNetworkName(name); err != nil {
				return nil, err
			}
			plan.NumberTenant(n.Config, k, false, false)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseAgents reads --agent: PATH for every host, hN=PATH for one.
func parseAgents(s *plan.Spec, flags []string) error {
	for _, v := range flags {
		host, path, one := strings.Cut(v, "=")
		if !one {
			s.Agent = plan.Agent{Path: v}
			continue
		}
		var i int
		if _, err := fmt.Sscanf(host, "h%d", &i); err != nil || i < 1 || fmt.Sprintf("h%d", i) != host {
			return fmt.Errorf("--agent %s: want PATH or hN=PATH (h1, h2, ...)", v)
		}
		if i > s.Hosts {
			return fmt.Errorf("--agent %s: the lab has hosts h1..h%d", v, s.Hosts)
		}
		if path == "" {
			return fmt.Errorf("--agent %s: no path", v)
		}
		for len(s.PerHost) < i {
			s.PerHost = append(s.PerHost, plan.HostSpec{Containers: s.Containers})
		}
		s.PerHost[i-1].Agent = plan.Agent{Path: path}
	}
	return nil
}

func downCmd() *cobra.Command {
	var name, root string
	var all bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a lab and everything running in it (idempotent); --all removes every lab and leftover",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all && cmd.Flags().Changed("name") {
				return fmt.Errorf("--all and --name exclude each other")
			}
			if !all {
				if err := plan.CheckName(name); err != nil {
					return err
				}
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("overlaylab down needs root to delete network namespaces: run it with sudo")
			}
			o := lab.Options{Command: "down"}
			if all {
				ts, err := lab.DownAll(cmd.Context(), root, o)
				if len(ts) == 0 && err == nil {
					fmt.Println("nothing to remove")
				}
				for _, t := range ts {
					fmt.Println(t.Summary())
				}
				return err
			}
			t, err := lab.Down(cmd.Context(), root, name, o)
			if t != nil {
				fmt.Println(t.Summary())
			}
			return err
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
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Printf("lab %q: backend %s, network %s, runtime %s, phase %s, state %s\n", st.Name, st.Backend, st.Network, st.Runtime, st.Phase, st.StateDir)
			lab.WriteTable(os.Stdout, st)
			return nil
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
		Short: "Run a command inside a host's or a container's network namespace (HOST may be etcd or underlay)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			nsName, err := st.Target(args[0])
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

// labFlags adds --name and --state-dir, which every lab command takes.
func labFlags(cmd *cobra.Command, name, root *string) {
	cmd.Flags().StringVar(name, "name", plan.DefaultName, "lab name")
	cmd.Flags().StringVar(root, "state-dir", plan.DefaultStateRoot, "where labs keep their state")
}
