package e2e

import (
	"os"
	"os/exec"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/overlaylab/overlaylab/lab/plan"
)

// expectCleanRefusal checks the contract for bad input: non-zero exit, one
// line on stderr that contains want, nothing on the system for that lab.
func expectCleanRefusal(r result, name, want string) {
	ExpectWithOffset(1, r.code).NotTo(Equal(0), r.String())
	msg := strings.TrimSpace(r.stderr)
	ExpectWithOffset(1, strings.Count(msg, "\n")).To(Equal(0), "want one line, got:\n%s", msg)
	ExpectWithOffset(1, msg).To(ContainSubstring(want))
	ExpectWithOffset(1, netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
	_, err := os.Stat(plan.StateDir(stateRoot, name))
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
		Entry("a /30 network", `--network "10.10.0.0/30"`, "--network", "10.10.0.0/30"),
		Entry("a network too small for the hosts", "fewer than --hosts 5", "--network", "10.10.0.0/28", "--hosts", "5"),
		Entry("an unknown backend", `unknown backend`, "--backend", "geneve"),
		Entry("overlapping underlay and overlay", "overlaps --underlay", "--network", "192.168.0.0/16"),
		Entry("a flag that does not exist", "unknown flag: --bogus", "--bogus"),
	)

	It("refuses a lab name over 32 characters", func() {
		long := "a-lab-name-of-thirty-three-chars"
		long += "x"
		r := run("up", "--name", long, "--state-dir", stateRoot)
		expectCleanRefusal(r, long, "at most 32 characters")
	})

	It("refuses to run without root", func() {
		cmd := exec.Command(bin, labArgs("e2enr", "up")...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		expectCleanRefusal(runCmd(cmd), "e2enr", "needs root")
	})

	It("says what to do when /dev/net/tun is missing", func() {
		if _, err := exec.LookPath("unshare"); err != nil {
			missing("unshare (util-linux) is not installed")
		}
		// A private mount namespace where /dev/net is an empty tmpfs.
		script := `mount -t tmpfs none /dev/net && exec "$0" "$@"`
		cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, bin}, labArgs("e2ent", "up")...)...)
		expectCleanRefusal(runCmd(cmd), "e2ent", "needs /dev/net/tun")
	})
})

// Errors of every command: exact message, exit code, and no lab made.
var _ = Describe("bad input to the other commands", func() {
	DescribeTable("gets one exact line and a non-zero exit",
		func(code int, want string, args ...string) {
			r := run(args...)
			Expect(r.code).To(Equal(code), r.String())
			Expect(strings.TrimSpace(r.stderr)).To(Equal(want))
			Expect(netnsWithPrefix("ol-nolab-")).To(BeEmpty())
		},
		Entry("status of a lab that does not exist", 1,
			`overlaylab: lab "nolab": no such lab (state /nonexistent/nolab/state.json not found; start one with `+"`overlaylab up --name nolab`"+`)`,
			"status", "--name", "nolab", "--state-dir", "/nonexistent"),
		Entry("status with an unknown format", 1, `overlaylab: -o "yaml": use json or table`,
			"status", "--name", "nolab", "--state-dir", "/nonexistent", "-o", "yaml"),
		Entry("kill with an unknown signal", 1, `overlaylab: --signal "HUP": use TERM, KILL or INT`,
			"kill", "--name", "nolab", "--state-dir", "/nonexistent", "h1", "--signal", "HUP"),
		Entry("an even number of etcd members", 1, `overlaylab: --etcd-members 2: use 1, 3 or 5 (a quorum needs an odd number)`,
			"up", "--name", "nolab", "--state-dir", "/nonexistent", "--etcd-members", "2"),
		Entry("an underlay too small", 1, `overlaylab: --underlay 10.0.0.0/30: holds 0 hosts (host i is its i-th address, etcd the top 6), fewer than --hosts 3: use a larger one, e.g. 172.20.0.0/16`,
			"up", "--name", "nolab", "--state-dir", "/nonexistent", "--underlay", "10.0.0.0/30"),
		Entry("agent without endpoints", 1, `overlaylab: --etcd-endpoints: at least one endpoint is needed`,
			"agent", "--etcd-endpoints", ""),
		Entry("agent with a port out of range", 1, `overlaylab: --healthz-port 70000: must be 0..65535`,
			"agent", "--healthz-port", "70000"),
		Entry("agent with a zero renew margin", 1, `overlaylab: --subnet-lease-renew-margin 0: must be at least 1 minute`,
			"agent", "--subnet-lease-renew-margin", "0"),
		Entry("agent with an unknown udp mode", 1, `overlaylab: --udp-mode "turbo": use fast or simple`,
			"agent", "--udp-mode", "turbo", "--etcd-endpoints", "http://127.0.0.1:1"),
		Entry("a flag without its value", 1, `overlaylab: flag needs an argument: --backend`,
			"up", "--backend"),
		Entry("run of a missing file", 1, `overlaylab: scenario /nonexistent.yaml: stat /nonexistent.yaml: no such file or directory`,
			"run", "/nonexistent.yaml"),
	)
})
