package udp

// The fast datapath ("--udp-mode fast", the default) moves the same
// datagrams as the simple one, with far fewer syscalls and no per-packet
// allocation:
//
//   - flannel0 is opened with IFF_VNET_HDR and TSO/USO/checksum offloads
//     (golang.zx2c4.com/wireguard/tun), so one read returns a whole TCP
//     segmentation batch (up to 64 KiB), which the library splits into
//     MTU-sized packets with their checksums filled in (GSO). One write
//     takes a batch of packets and merges consecutive TCP (and UDP) segments
//     of a flow into one large packet for the kernel (GRO).
//   - The UDP socket sends a batch with one sendmmsg, and packets to the same
//     peer that have the same size share one message with UDP_SEGMENT (UDP
//     GSO): the kernel cuts it into the same datagrams as before. It reads
//     with one recvmmsg, with UDP_GRO: a buffer holding several datagrams of
//     one sender is split back into packets here.
//   - Buffers are allocated once, and packets never cross goroutines: one
//     goroutine reads the TUN device and sends, another receives and writes.
//
// Admission and metrics are the simple path's, per packet. Every offload
// falls back cleanly when the kernel refuses it, and OffloadsEnv turns them
// off by hand; the features in use are logged at start.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

const (
	// headroom is the room in front of each packet in a buffer: the TUN
	// library writes its virtio-net header (10 bytes) there.
	headroom = 16
	// tunBatch is how many packets one TUN read may return (flannel0's
	// gso_max_segs is capped to it in configureFastLink, so every TSO batch
	// fits; the kernel cuts bigger ones itself) and how many MTU-sized
	// buffers feed one TUN write.
	tunBatch = 128
	// recvBatch is how many messages one recvmmsg may fill; with UDP GRO
	// each can hold 64 KiB of datagrams.
	recvBatch = 32
	// sockBuf is the socket buffer size asked for (SO_*BUFFORCE ignores
	// the sysctl caps; the plain options are the fallback).
	sockBuf = 8 << 20
	// tunQueueLen is flannel0's transmit queue: the packets waiting for the
	// agent to read them (the kernel's default for a TUN device is 500).
	// Twice the default absorbs bursts of small packets; with TSO an entry
	// can be 64 KiB, so deeper would only add delay.
	tunQueueLen = 1000
)

// features is what the fast datapath uses on this kernel.
type features struct {
	vnetHdr bool // TUN with virtio-net header and TSO + checksum offloads
	uso     bool // ... and UDP segmentation offload (Linux 6.2+)
	gso     bool // UDP_SEGMENT on send
	gro     bool // UDP_GRO on receive
}

// fastPath is the fast datapath's kernel state.
type fastPath struct {
	dev  wgtun.Device
	file *os.File // dev's file, for deadlines
	conn *net.UDPConn
	rc   syscall.RawConn
	feat features
}

// prepareFast creates flannel0 and the UDP socket with every offload the
// kernel and OffloadsEnv allow.
func (b *UDP) prepareFast() error {
	f := &fastPath{}
	fd, vnet, uso, err := openVnetTun(TunName, b.offl.tun, b.log)
	if err != nil {
		return err
	}
	// The library sets the same offloads again and owns the descriptor from
	// here on (closing it on Close). It is "unmonitored": no goroutines
	// watching netlink, the agent configures the device.
	dev, _, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		// Not closed here: the library may already have wrapped fd in an
		// *os.File whose finalizer closes it (closing it twice could hit a
		// descriptor reused meanwhile). The agent exits on this error.
		return fmt.Errorf("udp backend: tun %s: %w", TunName, err)
	}
	f.dev, f.file = dev, dev.File()
	f.feat.vnetHdr, f.feat.uso = vnet && dev.BatchSize() > 1, uso && dev.BatchSize() > 1

	conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: b.cfg.Backend.Port})
	if err != nil {
		dev.Close()
		return fmt.Errorf("udp backend: listen on port %d: %w", b.cfg.Backend.Port, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		dev.Close()
		return fmt.Errorf("udp backend: socket: %w", err)
	}
	f.conn, f.rc = conn, rc
	var rcvbuf, sndbuf int
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		rcvbuf = setBuf(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		sndbuf = setBuf(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		if b.offl.gso {
			// Support shows as a readable option (Linux 4.18+); the send
			// path falls back per message if a send is refused anyway.
			_, err := unix.GetsockoptInt(s, unix.SOL_UDP, unix.UDP_SEGMENT)
			f.feat.gso = err == nil
		}
		if b.offl.gro {
			f.feat.gro = unix.SetsockoptInt(s, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if cerr != nil {
		f.close()
		return fmt.Errorf("udp backend: socket options: %w", cerr)
	}
	b.fast = f
	b.log.Info("fast udp datapath", "tun_vnet_hdr", f.feat.vnetHdr, "tun_tso", f.feat.vnetHdr, "tun_uso", f.feat.uso,
		"udp_gso", f.feat.gso, "udp_gro", f.feat.gro, "tun_batch", dev.BatchSize(), "rcvbuf", rcvbuf, "sndbuf", sndbuf,
		"offloads_env", os.Getenv(OffloadsEnv))
	return nil
}

// setBuf sets a socket buffer to sockBuf, past the sysctl cap if allowed,
// and returns what the kernel reports (it doubles the value for overhead).
func setBuf(s, force, plain int) int {
	if unix.SetsockoptInt(s, unix.SOL_SOCKET, force, sockBuf) != nil {
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, plain, sockBuf)
	}
	v, _ := unix.GetsockoptInt(s, unix.SOL_SOCKET, plain)
	return v
}

// openVnetTun creates the TUN device, with a virtio-net header and the TCP
// offloads when wanted and possible, else without. It reports whether the
// header is on and whether UDP segmentation offload is available too.
func openVnetTun(name string, want bool, log *slog.Logger) (fd int, vnet, uso bool, err error) {
	if want {
		fd, err = tunFD(name, unix.IFF_VNET_HDR)
		if err != nil {
			return -1, false, false, err
		}
		const tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		const udp = unix.TUN_F_USO4 | unix.TUN_F_USO6
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcp); err == nil {
			uso = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcp|udp) == nil
			return fd, true, uso, nil
		} else {
			log.Warn("tun offloads refused; reading one packet at a time", "err", err)
		}
		// Closing the only descriptor deletes the device: create it again.
		unix.Close(fd)
	}
	fd, err = tunFD(name, 0)
	return fd, false, false, err
}

// tunFD creates (or attaches to) a TUN device without packet information.
func tunFD(name string, flags uint16) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w (is the tun module available?)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("create tun %s: %w", name, err)
	}
	return fd, nil
}

// configureFastLink tunes flannel0 for batches: a longer queue to absorb
// bursts while the agent sends, and a cap on the segments of one TSO batch
// so a read always fits the buffers (the kernel segments bigger ones
// itself).
func (f *fastPath) configureFastLink(link netlink.Link, log *slog.Logger) {
	if err := netlink.LinkSetTxQLen(link, tunQueueLen); err != nil {
		log.Warn("cannot raise the tun queue length", "dev", TunName, "err", err)
	}
	if f.feat.vnetHdr {
		if err := netlink.LinkSetGSOMaxSegs(link, tunBatch); err != nil {
			log.Warn("cannot cap the tun GSO segments; reads of batches with very small segments will be dropped", "dev", TunName, "err", err)
		}
	}
}

func (f *fastPath) close() error {
	var errs []error
	if f.conn != nil {
		errs = append(errs, f.conn.Close())
	}
	if f.dev != nil {
		errs = append(errs, f.dev.Close())
	}
	return errors.Join(errs...)
}

// stop wakes both loops.
func (f *fastPath) stop() {
	_ = f.file.SetDeadline(immediate)
	_ = f.conn.SetDeadline(immediate)
}

// stopped says whether err only means the loops were told to stop.
func stopped(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// tunToUDPFast reads batches from flannel0, routes each packet and sends
// the batch with one sendmmsg, runs of equal-size packets to one peer as
// one UDP GSO message each.
func (b *UDP) tunToUDPFast() error {
	f := b.fast
	n := max(f.dev.BatchSize(), 1)
	// A packet the kernel did not segment lands in bufs[0]; segments of a
	// TSO batch, never larger than the MTU, in the others.
	bufs := segmentBuffers(n, headroom+b.segCap())
	sizes := make([]int, n)
	pkts := make([][]byte, 0, n)
	dsts := make([]route, 0, n)
	s := newSender(f.rc, n)
	var plan gsoPlanner
	plan.msgs = make([]gsoMsg, 0, n)
	gso := f.feat.gso
	icmp := make([]byte, headroom+20+8+60+8)
	icmpBufs := make([][]byte, 1)
	for {
		cnt, err := f.dev.Read(bufs, sizes, headroom)
		if err != nil {
			if stopped(err) {
				return nil
			}
			var errno syscall.Errno
			if errors.As(err, &errno) {
				return fmt.Errorf("read %s: %w", TunName, err)
			}
			// The library could not make sense of what the kernel handed
			// over (a batch it cannot split); that is one packet lost.
			b.metrics.Drop(backend.DropMalformed)
			b.log.Debug("tun read", "err", err)
			if cnt <= 0 {
				continue
			}
		}
		t := b.tab.Load()
		pkts, dsts = pkts[:0], dsts[:0]
		plan.reset()
		// The packets of a batch mostly share a destination (a TSO batch
		// always does): look the route up once per destination change.
		var last netip.Addr
		var r route
		var ok bool
		for i := range cnt {
			if sizes[i] > len(bufs[i])-headroom {
				// A segment over the MTU we set (someone raised it by
				// hand): the library cut it short.
				b.metrics.Drop(backend.DropMalformed)
				continue
			}
			pkt := bufs[i][headroom : headroom+sizes[i]]
			_, dst, err := ipv4Addrs(pkt)
			if err != nil {
				b.metrics.Drop(dropReason(err))
				continue
			}
			if dst != last {
				r, ok = t.lookup(dst)
				last = dst
			}
			if !ok {
				b.metrics.Drop(backend.DropNoRoute)
				if m := netUnreachable(icmp[headroom:], pkt); m > 0 {
					icmpBufs[0] = icmp[:headroom+m]
					if _, err := f.dev.Write(icmpBufs, headroom); err != nil && stopped(err) {
						return nil
					}
				}
				continue
			}
			plan.add(len(pkts), len(pkt), r.dst, gso)
			pkts = append(pkts, pkt)
			dsts = append(dsts, r)
		}
		if len(pkts) == 0 {
			continue
		}
		if err := b.sendPlanned(s, &plan, pkts, dsts, &gso); err != nil {
			if stopped(err) {
				return nil
			}
			return fmt.Errorf("send udp: %w", err)
		}
	}
}

// sendPlanned sends the planned messages, counting per packet. A UDP GSO
// message the kernel refuses is sent again one datagram per packet; EIO
// (the egress device cannot checksum for us) turns UDP GSO off for good.
func (b *UDP) sendPlanned(s *sender, plan *gsoPlanner, pkts [][]byte, dsts []route, gso *bool) error {
	s.build(plan.msgs, pkts)
	for i := 0; i < len(plan.msgs); {
		sent, errno, err := s.send(i, len(plan.msgs))
		if err != nil {
			return err
		}
		if sent == 0 && errno == 0 {
			errno = unix.EIO // the kernel sent nothing and said nothing: never spin on it
		}
		for _, m := range plan.msgs[i : i+sent] {
			b.metrics.EncapPackets.Add(uint64(m.n))
			b.metrics.EncapBytes.Add(uint64(m.bytes))
		}
		i += sent
		if errno == 0 {
			continue
		}
		m := plan.msgs[i]
		if m.n == 1 {
			b.metrics.Drop(backend.DropSendError)
			i++
			continue
		}
		// Re-plan the rest of the batch without GSO and go on.
		if errno == unix.EIO && *gso {
			*gso = false
			b.log.Warn("UDP GSO refused by the kernel; sending one datagram per packet from now on", "err", errno)
		} else {
			b.log.Debug("UDP GSO message refused; resending its packets one by one", "err", errno, "segments", m.n, "size", m.size)
		}
		first := m.first
		plan.reset()
		for j := first; j < len(pkts); j++ {
			plan.add(j, len(pkts[j]), dsts[j].dst, false)
		}
		s.build(plan.msgs, pkts)
		i = 0
	}
	return nil
}

// udpToTunFast receives batches with recvmmsg, splits UDP GRO buffers into
// packets, admits each and writes them to flannel0 in batches, where the
// library merges the TCP segments of a flow.
func (b *UDP) udpToTunFast() error {
	f := b.fast
	r := newReceiver(f.rc, recvBatch, headroom, bufSize, f.feat.gro)
	w := &tunWriter{b: b, dev: f.dev, spare: carve(tunBatch, headroom+bufSize), bufs: make([][]byte, 0, recvBatch+tunBatch)}
	for {
		n, err := r.recv()
		if err != nil {
			if stopped(err) {
				return nil
			}
			return fmt.Errorf("read udp: %w", err)
		}
		t := b.tab.Load()
		for i := range n {
			from, data, segSize, trunc := r.msg(i, headroom)
			if trunc {
				b.metrics.Drop(backend.DropMalformed)
				continue
			}
			w.peer, w.known = t.byPublic[from]
			if segSize <= 0 || segSize >= len(data) {
				// One datagram: write it from where it was received.
				if w.admit(t, data) {
					w.bufs = append(w.bufs, r.bufs[i][:headroom+len(data)])
					w.count(len(data))
				}
				continue
			}
			for rest := data; len(rest) > 0; {
				var seg []byte
				seg, rest = nextSegment(rest, segSize)
				if !w.admit(t, seg) {
					continue
				}
				if err := w.queueCopy(seg); err != nil {
					if stopped(err) {
						return nil
					}
					return err
				}
			}
		}
		if err := w.flush(); err != nil {
			if stopped(err) {
				return nil
			}
			return err
		}
	}
}

// tunWriter collects admitted packets and writes them to the TUN device in
// batches.
type tunWriter struct {
	b   *UDP
	dev wgtun.Device
	// Buffers for the packets split out of a UDP GRO buffer. Each has room
	// for 64 KiB: the library merges a flow's segments by appending to the
	// first one it keeps, and any segment may become that first one (after
	// a merged packet reached 64 KiB, say); a segment with no room would stop
	// the merging of everything after it in the batch.
	spare  [][]byte
	used   int
	bufs   [][]byte // the batch: bufs[i][headroom:] is a packet
	pkts   int
	nbytes int
	// The sender of the message being split, looked up once.
	peer  netip.Prefix
	known bool
}

// admit checks one decapsulated packet from the current sender (peer,
// known) and counts a drop.
func (w *tunWriter) admit(t *table, pkt []byte) bool {
	src, dst, err := ipv4Addrs(pkt)
	if err != nil {
		w.b.metrics.Drop(dropReason(err))
		return false
	}
	if reason, ok := t.admitFrom(w.peer, w.known, src, dst); !ok {
		w.b.metrics.Drop(reason)
		return false
	}
	return true
}

func (w *tunWriter) count(n int) {
	w.pkts++
	w.nbytes += n
}

// queueCopy adds a copy of pkt to the batch, writing the batch first if the
// spare buffers ran out.
func (w *tunWriter) queueCopy(pkt []byte) error {
	if w.used == len(w.spare) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	buf := w.spare[w.used]
	w.used++
	copy(buf[headroom:], pkt)
	w.bufs = append(w.bufs, buf[:headroom+len(pkt)])
	w.count(len(pkt))
	return nil
}

// flush writes the batch. The library merges and writes per flow and joins
// the errors, so a failed batch is counted as failed as a whole.
func (w *tunWriter) flush() error {
	if len(w.bufs) == 0 {
		return nil
	}
	_, err := w.dev.Write(w.bufs, headroom)
	switch {
	case err == nil:
		w.b.metrics.DecapPackets.Add(uint64(w.pkts))
		w.b.metrics.DecapBytes.Add(uint64(w.nbytes))
	case stopped(err):
		return err
	default:
		for range w.pkts {
			w.b.metrics.Drop(backend.DropWriteError)
		}
		w.b.log.Debug("tun write", "err", err, "packets", w.pkts)
	}
	clear(w.bufs)
	w.bufs, w.used, w.pkts, w.nbytes = w.bufs[:0], 0, 0, 0
	return nil
}

// runFast runs both loops until ctx is done or one fails.
func (b *UDP) runFast(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- b.tunToUDPFast() }()
	go func() { errc <- b.udpToTunFast() }()
	select {
	case <-ctx.Done():
		b.fast.stop()
		<-errc
		<-errc
		return nil
	case err := <-errc:
		b.fast.stop()
		<-errc
		return err
	}
}

// segCap is the room for one packet that is at most the MTU.
func (b *UDP) segCap() int { return max(b.mtu, 1500) }

// segmentBuffers makes the TUN read buffers: the first holds any IPv4
// packet, the others size bytes each. Each one's capacity runs on to the
// end of one allocation with 64 KiB to spare, so that a segment longer than
// expected (the MTU raised by hand) is cut short by the library, and seen as
// such, rather than written past its buffer.
func segmentBuffers(n, size int) [][]byte {
	bufs := make([][]byte, n)
	bufs[0] = make([]byte, headroom+bufSize)
	slab := make([]byte, (n-1)*size+headroom+bufSize)
	for i := 1; i < n; i++ {
		bufs[i] = slab[(i-1)*size : i*size]
	}
	return bufs
}
