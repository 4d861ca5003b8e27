package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
)

// withLab opens a lab (taking its lock for the whole command), runs fn and
// releases it.
func withLab(ctx context.Context, root, name, what string, fn func(*lab.Lab) error) error {
	l, err := lab.Open(ctx, root, name, lab.Options{Command: what})
	if err != nil {
		return err
	}
	defer l.Close()
	return fn(l)
}

func killCmd() *cobra.Command {
	var name, root, sig string
	var member int
	cmd := &cobra.Command{
		Use:   "kill HOST|etcd",
		Short: "Stop a host's agent with a signal (TERM, KILL, INT), leaving its lease and devices as a crash would; `kill etcd` kills an etcd member",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := plan.ParseSignal(sig)
			if err != nil {
				return err
			}
			return withLab(cmd.Context(), root, name, "kill "+args[0], func(l *lab.Lab) error {
				if args[0] == "etcd" {
					return l.StopEtcd(member)
				}
				return l.KillAgent(args[0], s)
			})
		},
	}
	labFlags(cmd, &name, &root)
	cmd.Flags().StringVar(&sig, "signal", "TERM", "signal: TERM, KILL or INT (etcd is always killed with KILL)")
	cmd.Flags().IntVar(&member, "member", 1, "etcd member (1-based) for `kill etcd`")
	return cmd
}

func startCmd() *cobra.Command {
	var name, root, agent string
	var member int
	var noWait bool
	cmd := &cobra.Command{
		Use:   "start HOST|etcd",
		Short: "Start a host's stopped agent again (and wait until it is ready); `start etcd` starts an etcd member",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLab(cmd.Context(), root, name, "start "+args[0], func(l *lab.Lab) error {
				if args[0] == "etcd" {
					if err := l.StartEtcd(cmd.Context(), member); err != nil {
						return err
					}
					fmt.Printf("etcd member %d is running\n", member)
					return nil
				}
				o := lab.StartAgentOptions{NoWait: noWait}
				if agent != "" {
					o.Agent = &plan.Agent{Path: agent}
				}
				if err := l.StartAgent(cmd.Context(), args[0], o); err != nil {
					return err
				}
				h, _ := l.Snapshot().Host(args[0])
				if noWait {
					fmt.Printf("agent on %s started (pid %d, %s); not waiting for it to be ready\n", h.Name, h.AgentPID, h.Agent.Version)
					return nil
				}
				fmt.Printf("agent on %s is ready (pid %d, %s, subnet %s)\n", h.Name, h.AgentPID, h.Agent.Version, h.Subnet)
				return nil
			})
		},
	}
	labFlags(cmd, &name, &root)
	cmd.Flags().IntVar(&member, "member", 1, "etcd member (1-based) for `start etcd`")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the agent runs, without waiting for it to be ready (e.g. during an etcd outage)")
	cmd.Flags().StringVar(&agent, "agent", "", "start this agent binary instead of the host's (an upgrade or downgrade)")
	return cmd
}

func etcdCtlCmd() *cobra.Command {
	var name, root string
	cmd := &cobra.Command{
		Use:   "etcd stop|start [MEMBER]",
		Short: "Stop (SIGKILL, as a crash) or start an embedded etcd member of a lab (default member 1)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			member := 1
			if len(args) == 2 {
				k, err := strconv.Atoi(args[1])
				if err != nil || k < 1 {
					return fmt.Errorf("member %q: want 1, 2, ...", args[1])
				}
				member = k
			}
			return withLab(cmd.Context(), root, name, "etcd "+args[0], func(l *lab.Lab) error {
				switch args[0] {
				case "stop":
					return l.StopEtcd(member)
				case "start":
					return l.StartEtcd(cmd.Context(), member)
				}
				return fmt.Errorf("%q: use stop or start", args[0])
			})
		},
	}
	labFlags(cmd, &name, &root)
	return cmd
}

func hostCmd() *cobra.Command {
	var name, root, agent string
	var containers int
	var agentArgs []string
	var keepLease bool
	cmd := &cobra.Command{Use: "host", Short: "Add or remove hosts of a running lab"}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add the next host (namespace, agent, containers) to a running lab; names and addresses are never reused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLab(cmd.Context(), root, name, "host add", func(l *lab.Lab) error {
				h, err := l.AddHost(cmd.Context(), lab.HostOptions{Containers: containers, Agent: plan.Agent{Path: agent}, AgentArgs: agentArgs})
				if err != nil {
					return err
				}
				fmt.Printf("host %s is up: netns %s, underlay %s, subnet %s, %d containers, agent %s\n", h.Name, h.Netns, h.UnderlayIP, h.Subnet, len(h.Containers), h.Agent.Version)
				return nil
			})
		},
	}
	add.Flags().IntVar(&containers, "containers", plan.DefaultContainers, "containers on the new host (per network)")
	add.Flags().StringArrayVar(&agentArgs, "agent-arg", nil, "extra flag for the new agent (repeatable; default: up's --agent-arg)")
	add.Flags().StringVar(&agent, "agent", "", "agent binary for the new host (default: the lab's, from up --agent, else overlaylab's own)")
	remove := &cobra.Command{
		Use:   "remove HOST",
		Short: "Remove a host: stop its agent and what runs in it, delete its lease (unless --keep-lease) and its namespaces",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLab(cmd.Context(), root, name, "host remove "+args[0], func(l *lab.Lab) error {
				if err := l.RemoveHost(cmd.Context(), args[0], !keepLease); err != nil {
					return err
				}
				fmt.Printf("host %s removed\n", args[0])
				return nil
			})
		},
	}
	remove.Flags().BoolVar(&keepLease, "keep-lease", false, "leave the lease to expire instead of deleting it")
	for _, c := range []*cobra.Command{add, remove} {
		labFlags(c, &name, &root)
	}
	cmd.AddCommand(add, remove)
	return cmd
}
