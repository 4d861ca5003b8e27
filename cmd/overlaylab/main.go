// Command overlaylab is the flannel-style overlay agent and the lab that
// proves it: one binary, several commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
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
	root.Version = version()
	root.SetVersionTemplate("overlaylab {{.Version}}\n")
	root.AddCommand(agentCmd(), upCmd(), downCmd(), statusCmd(), execCmd(), killCmd(), startCmd(), hostCmd(), etcdCtlCmd(), impairCmd(), linkMTUCmd(),
		runCmd(), validateCmd(), etcdMemberCmd(), etcdProxyCmd(), linkemCmd(), benchCmd())
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

// version is the module version, or the VCS revision the binary was built
// from (what `--version` prints after "overlaylab"; the lab recognizes its
// own agent by that word).
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel-" + rev + modified
	}
	if v == "" {
		return "(devel)"
	}
	return v
}
