package e2e

import (
	"os"
	"os/exec"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
)

// markedProcesses lists PIDs carrying a lab's mark in their environment.
func markedProcesses(name string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && strings.Contains(string(env), lab.EnvLab+"="+name+"\x00") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

var _ = Describe("up killed with SIGKILL while building", func() {
	DescribeTable("leaves nothing that down --all does not remove",
		func(phase string, dropState bool) {
			const name = "e2ecr"
			cmd := exec.Command(bin, labArgs(name, "up", "--hosts", "3", "--containers", "2")...)
			cmd.Env = append(os.Environ(), lab.EnvCrashAt+"="+phase)
			r := runCmd(cmd)
			Expect(r.code).To(Equal(-1), "up should have been killed: "+r.String())
			Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).NotTo(BeEmpty(), "nothing was built before %s", phase)
			if phase != "after-etcd" {
				Expect(markedProcesses(name)).NotTo(BeEmpty(), "no process was started before %s", phase)
			}
			if dropState {
				Expect(os.RemoveAll(plan.StateDir(stateRoot, name))).To(Succeed())
			}
			// down --all removes every lab on the machine, a developer's
			// too: CI (CI=true) proves it, a local run uses the lab's name
			// (which takes the same path without state).
			if os.Getenv("CI") == "true" {
				r = run("down", "--all", "--state-dir", stateRoot)
			} else {
				r = run(labArgs(name, "down")...)
			}
			Expect(r.code).To(Equal(0), r.String())
			Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
			Eventually(func() []string { return markedProcesses(name) }).Should(BeEmpty())
			_, err := os.Stat(plan.StateDir(stateRoot, name))
			Expect(os.IsNotExist(err)).To(BeTrue(), "state dir left")
		},
		Entry("after etcd", "after-etcd", false),
		Entry("mid-hosts", "mid-hosts", false),
		Entry("mid-agents", "mid-agents", false),
		Entry("mid-containers", "mid-containers", false),
		Entry("mid-agents, state dir gone too", "mid-agents", true),
	)
})
