// Command overlaylab is the flannel-style overlay agent and the lab that
// proves it: one binary, several commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := &cobra.Command{
		Use:           "overlaylab",
		Short:         "A flannel-compatible container overlay network and the lab that proves it",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), upCmd(), downCmd(), statusCmd(), execCmd(), killCmd(), startCmd(), hostCmd(), runCmd(), validateCmd(), etcdCmd(), etcdProxyCmd(), benchCmd())
	err := root.ExecuteContext(ctx)
	stop()
	var ee exitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "overlaylab:", err)
		os.Exit(1)
	}
}
