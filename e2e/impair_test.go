package e2e

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var rttAvgRE = regexp.MustCompile(`rtt min/avg/max/mdev = [0-9.]+/([0-9.]+)/`)

// avgRTT runs the standard ping from a namespace and returns its average.
func avgRTT(ns, ip string, count int) float64 {
	r := inNetns(ns, 30*time.Second, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-q", ip)
	ExpectWithOffset(1, r.code).To(Equal(0), r.String())
	m := rttAvgRE.FindStringSubmatch(r.stdout)
	ExpectWithOffset(1, m).NotTo(BeNil(), r.stdout)
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// answeredSeqs runs 100 pings and lists the sequence numbers answered.
func answeredSeqs(ns, ip string) string {
	r := inNetns(ns, 60*time.Second, "ping", "-c", "100", "-i", "0.05", "-W", "1", ip)
	var seqs []string
	for _, m := range regexp.MustCompile(`icmp_seq=(\d+)`).FindAllStringSubmatch(r.stdout, -1) {
		seqs = append(seqs, m[1])
	}
	return strings.Join(seqs, " ")
}

var _ = Describe("impair (the userspace link emulator)", Ordered, func() {
	const name = "e2eimp"
	var from, to string
	BeforeAll(func() {
		if _, err := exec.LookPath("ping"); err != nil {
			missing("ping is not installed (.ci/run installs iputils-ping)")
		}
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		st := status(name)
		from, to = st.Hosts[0].Containers[0].Netns, st.Hosts[1].Containers[0].IP
	})

	It("adds the delay to every round trip through the host, both ways, and --clear removes it", func() {
		base := avgRTT(from, to, 5)
		r := run(labArgs(name, "impair", "h1", "--delay", "20ms")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(avgRTT(from, to, 10)-base).To(BeNumerically("~", 40, 4), "20 ms each way through h1")
		r = run(labArgs(name, "impair", "h1", "--clear")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(avgRTT(from, to, 5)).To(BeNumerically("<", base+5))
	})

	It("drops the same ICMP sequence numbers in two runs with the same seed", func() {
		var runs []string
		for range 2 {
			r := run(labArgs(name, "impair", "h1", "--loss", "30%", "--seed", "7", "--match", "overlay")...)
			Expect(r.code).To(Equal(0), r.String())
			runs = append(runs, answeredSeqs(from, to))
			Expect(run(labArgs(name, "impair", "h1", "--clear")...).code).To(Equal(0))
		}
		n := len(strings.Fields(runs[0]))
		Expect(n).To(BeNumerically(">", 20), "some echoes must pass")
		Expect(n).To(BeNumerically("<", 90), "30%% loss each way must show")
		Expect(runs[1]).To(Equal(runs[0]))
		r := run(labArgs(name, "impair", "h1", "--loss", "30%", "--seed", "8", "--match", "overlay")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(answeredSeqs(from, to)).NotTo(Equal(runs[0]), "another seed, other losses")
		Expect(run(labArgs(name, "impair", "h1", "--clear")...).code).To(Equal(0))
	})

	It("narrows a host's hop with link-mtu, and 0 removes it", func() {
		df := func(size int) bool {
			return exec.Command("ip", "netns", "exec", from, "ping", "-c", "2", "-W", "1", "-i", "0.2", "-M", "do", "-s", strconv.Itoa(size-28), to).Run() == nil
		}
		Expect(df(1400)).To(BeTrue(), "1400-byte DF pings pass on the full path")
		r := run(labArgs(name, "link-mtu", "h1", "1400")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(df(1400)).To(BeFalse(), "a 1400-byte inner packet is more than 1400 bytes on the wire")
		Expect(df(1300)).To(BeTrue(), "well under the hop's MTU")
		r = run(labArgs(name, "link-mtu", "h1", "0")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(df(1400)).To(BeTrue(), "the narrowing removed")
		for _, args := range [][]string{{"h1", "wide"}, {"h1", "20"}, {"h9", "1400"}} {
			r := run(labArgs(name, append([]string{"link-mtu"}, args...)...)...)
			Expect(r.code).NotTo(Equal(0), "link-mtu %v must be refused", args)
		}
	})

	It("refuses what is not an impairment", func() {
		for _, args := range [][]string{{"h1"}, {"h1", "--loss", "120%"}, {"h1", "--jitter", "5ms"}, {"h1", "--direction", "up", "--delay", "1ms"}, {"h9", "--delay", "1ms"}} {
			r := run(labArgs(name, append([]string{"impair"}, args...)...)...)
			Expect(r.code).NotTo(Equal(0), "impair %v: %s", args, r)
			Expect(strings.Count(strings.TrimSpace(r.stderr), "\n")).To(Equal(0), r.stderr)
		}
	})
})
