package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
)

// linkMTUCmd is the scenario's link-mtu fault by hand.
func linkMTUCmd() *cobra.Command {
	var name, root string
	cmd := &cobra.Command{
		Use:   "link-mtu HOST MTU",
		Short: "Narrow a host's hop to the underlay to MTU bytes (the agents are not told); 0 removes it",
		Long: `Puts the link emulator on the host's underlay link with a hop MTU: every wire packet longer than
MTU bytes is dropped there, in both directions (GSO frames judged by their segments), as a narrower
link between the host and the rest would. An impairment in place stays; 0 removes only the narrowing.
The scenario word is the same: link-mtu {host, mtu}.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mtu, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("link-mtu %s %q: MTU must be a number of bytes (0 removes it)", args[0], args[1])
			}
			return withLab(cmd.Context(), root, name, "link-mtu "+args[0]+" "+args[1], func(l *lab.Lab) error {
				if err := l.SetLinkMTU(cmd.Context(), args[0], mtu); err != nil {
					return err
				}
				if mtu == 0 {
					fmt.Printf("%s's hop to the underlay is no longer narrowed\n", args[0])
				} else {
					fmt.Printf("%s's hop to the underlay carries at most %d bytes\n", args[0], mtu)
				}
				return nil
			})
		},
	}
	labFlags(cmd, &name, &root)
	return cmd
}
