package linkem

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Figures for the lab's bench (root; each builds its own namespaces):
//
//	go test ./internal/linkem -run XXX -bench . -benchtime 3x
//
// TCP windows: a round trip of 20 ms needs a window of 2.5 MB per Gbit/s.
// The namespaces keep the kernel's default TCP buffers (tcp_rmem max 6 MiB,
// so some 3 MB of window), which is what a lab host has; the "bigwin"
// variant raises them to show what the relay itself carries.

func BenchmarkThroughputDelayOnly(b *testing.B) {
	for _, bigWindows := range []bool{false, true} {
		name := "defaultwin"
		if bigWindows {
			name = "bigwin"
		}
		b.Run(name, func(b *testing.B) {
			n := newTestNet(b)
			if bigWindows {
				for _, ns := range []string{n.h1, n.h2} {
					out, err := inNS(b.Context(), ns, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 131072 67108864", "net.ipv4.tcp_wmem=4096 16384 67108864").CombinedOutput()
					if err != nil {
						b.Fatalf("sysctl: %v %s", err, out)
					}
				}
			}
			delay := Impairment{Delay: Duration(10 * time.Millisecond)}
			rr := n.startRelay(b, Config{Out: delay, In: delay})
			const size = 256 << 20
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				total += blast(b, n.h2, n.h1, hostIP[2]+":0", size)
			}
			b.StopTimer()
			st := rr.r.Stats()
			b.ReportMetric(float64(size*8*b.N)/total.Seconds()/1e9, "Gbit/s")
			b.ReportMetric(float64(st.Out.DroppedQueue+st.Out.Errors+st.Out.KernelDrops), "relay-drops")
		})
	}
}

// blast sends size bytes over TCP from dialNS to a listener on addr in
// listenNS, with no work per byte on either side (the byte-exact checks are
// the tests' job), and returns how long the receiver took to get them all.
func blast(b *testing.B, listenNS, dialNS, addr string, size int64) time.Duration {
	b.Helper()
	var ln net.Listener
	if err := nsutil.DoNamed(listenNS, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := nsutil.DialContext(dialNS)(b.Context(), "tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatalf("send: %v", err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-got; n != size {
		b.Fatalf("received %d of %d bytes", n, size)
	}
	return time.Since(start)
}

func BenchmarkRTTDelayJitter(b *testing.B) {
	n := newTestNet(b)
	udpEcho(b, n.h2, hostIP[2]+":7")
	const probes = 200
	base := udpRTTs(b, n.h1, hostIP[2]+":7", probes)
	imp := Impairment{Delay: Duration(10 * time.Millisecond), Jitter: Duration(2 * time.Millisecond)}
	n.startRelay(b, Config{Seed: 1, Out: imp, In: imp})
	var all []time.Duration
	b.ResetTimer()
	for range b.N {
		all = append(all, udpRTTs(b, n.h1, hostIP[2]+":7", probes)...)
	}
	b.StopTimer()
	if len(all) < probes*b.N*9/10 {
		b.Fatalf("%d of %d probes answered", len(all), probes*b.N)
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(percentile(base, 50)), "base-p50-ms")
	b.ReportMetric(ms(percentile(all, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(all, 99)), "p99-ms")
	b.ReportMetric(ms(slices.Min(all)), "min-ms")
	b.ReportMetric(ms(slices.Max(all)), "max-ms")
}
