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
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "lab name")
	cmd.Flags().StringVar(&root, "state-dir", lab.DefaultStateRoot, "where labs keep their state")
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
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "lab name")
	cmd.Flags().StringVar(&root, "state-dir", lab.DefaultStateRoot, "where labs keep their state")
	return cmd
}
