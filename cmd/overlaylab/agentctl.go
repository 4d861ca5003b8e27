package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
)

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT}

func killCmd() *cobra.Command {
	var name, root, sig string
	cmd := &cobra.Command{
		Use:   "kill HOST",
		Short: "Stop a host's agent with a signal (TERM, KILL, INT), leaving its lease and devices as a crash would",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, ok := signals[strings.TrimPrefix(strings.ToUpper(sig), "SIG")]
			if !ok {
				return fmt.Errorf("--signal %q: use TERM, KILL or INT", sig)
			}
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			return lab.KillAgent(st, args[0], s)
		},
	}
	labFlags(cmd, &name, &root)
	cmd.Flags().StringVar(&sig, "signal", "TERM", "signal: TERM, KILL or INT")
	return cmd
}

func startCmd() *cobra.Command {
	var name, root string
	cmd := &cobra.Command{
		Use:   "start HOST",
		Short: "Start a host's stopped agent again and wait until it is ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			if err := lab.RestartAgent(cmd.Context(), st, bin, args[0]); err != nil {
				return err
			}
			h, _ := st.Host(args[0])
			fmt.Printf("agent on %s is ready (pid %d, subnet %s)\n", h.Name, h.AgentPID, h.Subnet)
			return nil
		},
	}
	labFlags(cmd, &name, &root)
	return cmd
}

func hostCmd() *cobra.Command {
	var name, root string
	var containers int
	var agentArgs []string
	var keepLease bool
	cmd := &cobra.Command{Use: "host", Short: "Add or remove hosts of a running lab"}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add the next host (namespace, agent, containers) to a running lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if containers < 0 {
				return fmt.Errorf("--containers %d: cannot be negative", containers)
			}
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			h, err := lab.AddHost(cmd.Context(), st, bin, lab.HostOptions{Containers: containers, AgentArgs: agentArgs})
			if err != nil {
				return err
			}
			fmt.Printf("host %s is up: netns %s, underlay %s, subnet %s, %d containers\n", h.Name, h.Netns, h.UnderlayIP, h.Subnet, len(h.Containers))
			return nil
		},
	}
	add.Flags().IntVar(&containers, "containers", 2, "containers on the new host")
	add.Flags().StringArrayVar(&agentArgs, "agent-arg", nil, "extra flag for the new agent (repeatable)")
	remove := &cobra.Command{
		Use:   "remove HOST",
		Short: "Remove a host: stop its agent, delete its lease (unless --keep-lease), delete its namespaces",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			if err := lab.RemoveHost(cmd.Context(), st, args[0], !keepLease); err != nil {
				return err
			}
			fmt.Printf("host %s removed\n", args[0])
			return nil
		},
	}
	remove.Flags().BoolVar(&keepLease, "keep-lease", false, "leave the lease to expire instead of deleting it")
	for _, c := range []*cobra.Command{add, remove} {
		labFlags(c, &name, &root)
	}
	cmd.AddCommand(add, remove)
	return cmd
}
