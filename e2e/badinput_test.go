package e2e

import (
	"os"
	"os/exec"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/topo"
)

// expectCleanRefusal checks the contract for bad input: non-zero exit, one
// line on stderr that contains want, nothing on the system for that lab.
func expectCleanRefusal(r result, name, want string) {
	ExpectWithOffset(1, r.code).NotTo(Equal(0), r.String())
	msg := strings.TrimSpace(r.stderr)
	ExpectWithOffset(1, strings.Count(msg, "\n")).To(Equal(0), "want one line, got:\n%s", msg)
	ExpectWithOffset(1, msg).To(ContainSubstring(want))
	ExpectWithOffset(1, netnsWithPrefix(topo.Names{Lab: name}.Prefix())).To(BeEmpty())
	_, err := os.Stat(lab.StateDir(stateRoot, name))
	ExpectWithOffset(1, os.IsNotExist(err)).To(BeTrue(), "state dir left behind")
}

var _ = Describe("bad input to up", func() {
	DescribeTable("is refused with one clear line and nothing left behind",
		func(want string, args ...string) {
			r := run(labArgs("e2ebad", append([]string{"up"}, args...)...)...)
			expectCleanRefusal(r, "e2ebad", want)
		},
		Entry("no hosts", "--hosts 0: need at least 1 host", "--hosts", "0"),
		Entry("negative containers", "--containers -1: cannot be negative", "--containers", "-1"),
		Entry("a /30 network", `Network "10.10.0.0/30"`, "--network", "10.10.0.0/30"),
		Entry("a network too small for the hosts", "fewer than --hosts 5", "--network", "10.10.0.0/28", "--hosts", "5"),
		Entry("an unknown backend", `unknown backend`, "--backend", "geneve"),
		Entry("overlapping underlay and overlay", "overlaps --underlay", "--network", "192.168.0.0/16"),
		Entry("a flag that does not exist", "unknown flag: --bogus", "--bogus"),
	)

	It("refuses a name that makes an interface name over 15 characters", func() {
		r := run("up", "--name", "averylongname", "--state-dir", stateRoot)
		expectCleanRefusal(r, "averylongname", "the kernel allows 15")
	})

	It("refuses to run without root", func() {
		cmd := exec.Command(bin, labArgs("e2enr", "up")...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		expectCleanRefusal(runCmd(cmd), "e2enr", "needs root")
	})

	It("says what to do when /dev/net/tun is missing", func() {
		if _, err := exec.LookPath("unshare"); err != nil {
			Skip("unshare (util-linux) is not installed")
		}
		// A private mount namespace where /dev/net is an empty tmpfs.
		script := `mount -t tmpfs none /dev/net && exec "$0" "$@"`
		cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, bin}, labArgs("e2ent", "up")...)...)
		expectCleanRefusal(runCmd(cmd), "e2ent", "needs /dev/net/tun")
	})
})
