package udp

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"github.com/overlaylab/overlaylab/internal/nstest"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inThrowawayNetns runs fn on a thread inside a new network namespace, so
// that the TUN device and sockets it makes never touch the machine's own.
// The namespace goes away with its last descriptor and socket.
func inThrowawayNetns(t *testing.T, fn func(h *netlink.Handle)) {
	t.Helper()
	nstest.SkipUnlessRoot(t, "a network namespace and a TUN device")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			t.Error(err)
			return
		}
		defer ns.Close()
		defer func() {
			// Unlock only once back home; otherwise the thread dies with
			// the goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		fn(h)
	}()
	<-done
}

// TestMultiQueueTunFollowsWrites: flannel0 opens with one queue per worker,
// and the kernel sends a flow's packets to the queue on which the agent
// last wrote a packet of that flow (the other direction): the send side of
// the flow affinity that workers.go relies on, checked on this kernel.
func TestMultiQueueTunFollowsWrites(t *testing.T) {
	const n = 4
	inThrowawayNetns(t, func(h *netlink.Handle) {
		fds, vnet, _, err := openVnetTun(TunName, n, true, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Error(err)
			return
		}
		defer closeFDs(fds)
		if !vnet || len(fds) != n {
			t.Errorf("queues %d, vnet %v", len(fds), vnet)
			return
		}
		link, err := h.LinkByName(TunName)
		if err != nil {
			t.Error(err)
			return
		}
		addr, _ := netlink.ParseAddr("10.10.1.1/16")
		if err := h.AddrAdd(link, addr); err != nil {
			t.Error(err)
			return
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Error(err)
			return
		}
		sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 10, 1, 1), Port: 5000})
		if err != nil {
			t.Error(err)
			return
		}
		defer sock.Close()
		peer := &net.UDPAddr{IP: net.IPv4(10, 10, 2, 5), Port: 6000}
		// In: a packet of the flow, written on queue k. Out: the next packet
		// the socket sends on the flow must be read on queue k.
		in := fuzzIPv4([4]byte{10, 10, 2, 5}, [4]byte{10, 10, 1, 1}, protoUDP, make([]byte, 8+4), 0)
		binary.BigEndian.PutUint16(in[20:], 6000)
		binary.BigEndian.PutUint16(in[22:], 5000)
		binary.BigEndian.PutUint16(in[24:], 12)
		for _, k := range []int{2, 0, 3, 1, 1, 2} {
			if _, err := unix.Write(fds[k], append(make([]byte, vnetHdrLen), in...)); err != nil {
				t.Errorf("write queue %d: %v", k, err)
				return
			}
			if _, err := sock.WriteToUDP([]byte("out"), peer); err != nil {
				t.Error(err)
				return
			}
			got, err := readAnyQueue(fds, [4]byte{10, 10, 2, 5})
			if err != nil {
				t.Error(err)
				return
			}
			if got != k {
				t.Errorf("after a write on queue %d, the flow's next packet left on queue %d", k, got)
			}
		}
	})
}

// TestMultiQueueTunIsExclusive: a second agent cannot attach queues to the
// flannel0 of a running one (the kernel lets anyone add queues to a
// multi-queue device; a single-queue one it refuses with EBUSY).
func TestMultiQueueTunIsExclusive(t *testing.T) {
	inThrowawayNetns(t, func(h *netlink.Handle) {
		log := slog.New(slog.DiscardHandler)
		fds, _, _, err := openVnetTun(TunName, 2, true, log)
		if err != nil {
			t.Error(err)
			return
		}
		defer closeFDs(fds)
		for _, n := range []int{2, 1} {
			more, _, _, err := openVnetTun(TunName, n, true, log)
			closeFDs(more)
			if err == nil {
				t.Errorf("a second agent with %d queues attached to the running one's %s", n, TunName)
			}
		}
		link, err := h.LinkByName(TunName)
		if err != nil {
			t.Error(err)
			return
		}
		if q := link.(*netlink.Tuntap).Queues; q != 2 {
			t.Errorf("%s has %d queues after the refused attempts, want 2", TunName, q)
		}
	})
}

// readAnyQueue waits for the next IPv4 packet to dst on any of the queues
// (other traffic, such as IPv6 neighbour discovery, is skipped) and says
// which queue it was on.
func readAnyQueue(fds []int, dst [4]byte) (int, error) {
	pfds := make([]unix.PollFd, len(fds))
	buf := make([]byte, 65536)
	for {
		for i, fd := range fds {
			pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		}
		if n, err := unix.Poll(pfds, 2000); err != nil || n == 0 {
			return -1, fmt.Errorf("nothing on any queue (%v)", err)
		}
		for i, p := range pfds {
			if p.Revents&unix.POLLIN == 0 {
				continue
			}
			m, err := unix.Read(fds[i], buf)
			if err != nil {
				return -1, err
			}
			pkt := buf[vnetHdrLen:m]
			if len(pkt) >= 20 && pkt[0]>>4 == 4 && [4]byte(pkt[16:20]) == dst {
				return i, nil
			}
		}
	}
}
