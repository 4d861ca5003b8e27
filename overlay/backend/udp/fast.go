package udp

// The fast datapath ("--udp-mode fast", the default) moves the same
// datagrams as the simple one, with far fewer syscalls, copies and wakeups:
//
//   - flannel0 is opened with IFF_VNET_HDR and TSO/USO/checksum offloads, so
//     one read returns a whole TCP segmentation batch (up to 64 KiB). It is
//     cut into MTU-sized datagrams without copying the payload (segment.go:
//     each datagram is a rebuilt header plus a slice of the read buffer, its
//     checksum computed in one pass), and the whole batch leaves with one
//     sendmmsg, runs of equal-size datagrams to one peer as one UDP GSO
//     message each (the kernel cuts it into the same datagrams as before).
//   - The socket receives with recvmmsg and UDP_GRO, so a buffer holds up to
//     64 datagrams of one sender; a TCP flow's consecutive segments are
//     written to flannel0 as one large segment (coalesce.go), again without
//     copying: one writev of the first segment, its header rewritten, and the
//     others' payloads.
//   - Buffers are allocated once; packets never cross goroutines: one
//     goroutine reads the TUN device and sends, another receives and writes.
//     The hot syscalls are non-blocking and made as raw syscalls, so the Go
//     scheduler does not hand the thread's P away (and wake another thread)
//     during the tens of microseconds the kernel spends inside sendmmsg or
//     writev carrying a 64 KiB batch through the stack; the poller parks a
//     loop only when its descriptor is empty.
//
// Admission and metrics are the simple path's, per datagram. Every offload
// falls back cleanly when the kernel refuses it, and OffloadsEnv turns them
// off by hand; the features in use are logged at start.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

const (
	// tunBatch is the most datagrams one TUN read may become (flannel0's
	// gso_max_segs is capped to it in configureFastLink, so every TSO batch
	// fits; the kernel cuts bigger ones itself).
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
	dev  *tunDev
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
	dev, err := newTunDev(fd, vnet)
	if err != nil {
		return fmt.Errorf("udp backend: tun %s: %w", TunName, err)
	}
	f.dev = dev
	f.feat.vnetHdr, f.feat.uso = vnet, uso
	if err := f.openSocket(b.cfg.Backend.Port, b.offl); err != nil {
		dev.close()
		return fmt.Errorf("udp backend: %w", err)
	}
	b.fast = f
	b.log.Info("fast udp datapath", "tun_vnet_hdr", f.feat.vnetHdr, "tun_tso", f.feat.vnetHdr, "tun_uso", f.feat.uso,
		"udp_gso", f.feat.gso, "udp_gro", f.feat.gro, "offloads_env", os.Getenv(OffloadsEnv))
	return nil
}

// openSocket opens the UDP socket on port with large buffers and the UDP
// offloads that are allowed and available.
func (f *fastPath) openSocket(port int, offl offloads) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", port, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return fmt.Errorf("socket: %w", err)
	}
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		setBuf(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		setBuf(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		if offl.gso {
			// Support shows as a readable option (Linux 4.18+); the send
			// path falls back per message if a send is refused anyway.
			_, err := unix.GetsockoptInt(s, unix.SOL_UDP, unix.UDP_SEGMENT)
			f.feat.gso = err == nil
		}
		if offl.gro {
			f.feat.gro = unix.SetsockoptInt(s, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if cerr != nil {
		conn.Close()
		return fmt.Errorf("socket options: %w", cerr)
	}
	f.conn, f.rc = conn, rc
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
// so that the datagrams of a read always fit a send batch (the kernel
// segments bigger ones itself).
func (f *fastPath) configureFastLink(link netlink.Link, log *slog.Logger) {
	if err := netlink.LinkSetTxQLen(link, tunQueueLen); err != nil {
		log.Warn("cannot raise the tun queue length", "dev", TunName, "err", err)
	}
	if f.feat.vnetHdr {
		if err := netlink.LinkSetGSOMaxSegs(link, tunBatch); err != nil {
			log.Warn("cannot cap the tun GSO segments; a batch of very small segments that does not fit a send batch will be dropped", "dev", TunName, "err", err)
		}
	}
}

func (f *fastPath) close() error {
	var errs []error
	if f.conn != nil {
		errs = append(errs, f.conn.Close())
	}
	if f.dev != nil {
		errs = append(errs, f.dev.close())
	}
	return errors.Join(errs...)
}

// stop wakes both loops.
func (f *fastPath) stop() {
	_ = f.dev.file.SetDeadline(immediate)
	_ = f.conn.SetDeadline(immediate)
}

// stopped says whether err only means the loops were told to stop.
func stopped(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// tunReads is how many TUN reads one send batch gathers at most: the first
// waits, the others only take what is already queued.
const tunReads = 8

// tunToUDPFast reads what flannel0 has queued (up to tunReads reads), cuts
// large segments into datagrams without copying their payload and sends the
// whole batch with one sendmmsg, runs of equal-size datagrams to one peer as
// one UDP GSO message each.
func (b *UDP) tunToUDPFast() error {
	f := b.fast
	d := f.dev
	bufs := carve(tunReads, d.hdrLen()+bufSize)
	batch := newSendBatch(tunReads * tunBatch)
	s := newSender(f.rc, cap(batch.dgrams))
	var plan gsoPlanner
	plan.msgs = make([]gsoMsg, 0, cap(batch.dgrams))
	gso := f.feat.gso
	icmp := make([]byte, vnetHdrLen+20+8+60+8)
	for {
		batch.reset()
		for i := range tunReads {
			n, err := d.read(bufs[i], i > 0)
			if err != nil {
				if stopped(err) {
					return nil
				}
				return fmt.Errorf("read %s: %w", TunName, err)
			}
			if n < 0 {
				break // nothing more queued
			}
			if err := b.queueTunPacket(batch, bufs[i][:n], icmp); err != nil {
				if stopped(err) {
					return nil
				}
				return err
			}
			if batch.room() < tunBatch {
				break
			}
		}
		if len(batch.dgrams) == 0 {
			continue
		}
		plan.reset()
		for i, g := range batch.dgrams {
			plan.add(i, g.size, g.dst, gso)
		}
		plan.unbundle(b.mtu, batch.size)
		if err := b.sendPlanned(s, &plan, batch, &gso); err != nil {
			if stopped(err) {
				return nil
			}
			return fmt.Errorf("send udp: %w", err)
		}
	}
}

// queueTunPacket routes what one TUN read returned and adds its datagrams
// to the batch; a packet for no peer gets an ICMP net unreachable back.
func (b *UDP) queueTunPacket(batch *sendBatch, buf, icmp []byte) error {
	d := b.fast.dev
	h, pkt, err := d.split(buf)
	if err != nil {
		b.metrics.Drop(backend.DropMalformed)
		return nil
	}
	_, dst, err := ipv4Addrs(pkt)
	if err != nil {
		b.metrics.Drop(dropReason(err))
		return nil
	}
	r, ok := b.tab.Load().lookup(dst)
	if !ok {
		b.metrics.Drop(backend.DropNoRoute)
		if m := netUnreachable(icmp[vnetHdrLen:], pkt); m > 0 {
			clear(icmp[:vnetHdrLen])
			out := icmp[vnetHdrLen-d.hdrLen() : vnetHdrLen+m]
			if err := d.write(out); err != nil && stopped(err) {
				return err
			}
		}
		return nil
	}
	if _, err := batch.addTunPacket(h, pkt, r.dst); err != nil {
		b.metrics.Drop(backend.DropMalformed)
		b.log.Debug("tun read", "err", err, "gso_type", h.gsoType, "gso_size", h.gsoSize, "len", len(pkt))
	}
	return nil
}

// sendPlanned sends the planned messages, counting per datagram. A UDP GSO
// message the kernel refuses is sent again one datagram per message; EIO
// (the egress device cannot checksum for us) turns UDP GSO off for good.
func (b *UDP) sendPlanned(s *sender, plan *gsoPlanner, batch *sendBatch, gso *bool) error {
	s.build(plan.msgs, batch)
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
			b.log.Warn("UDP GSO refused by the kernel; sending one datagram per message from now on", "err", errno)
		} else {
			b.log.Debug("UDP GSO message refused; resending its datagrams one by one", "err", errno, "segments", m.n, "size", m.size)
		}
		first := m.first
		plan.reset()
		for j := first; j < len(batch.dgrams); j++ {
			plan.add(j, batch.dgrams[j].size, batch.dgrams[j].dst, false)
		}
		s.build(plan.msgs, batch)
		i = 0
	}
	return nil
}

// udpToTunFast receives batches with recvmmsg, splits UDP GRO buffers into
// datagrams, admits each and writes them to flannel0, a flow's consecutive
// TCP segments merged into one large segment.
func (b *UDP) udpToTunFast() error {
	f := b.fast
	d := f.dev
	r := newReceiver(f.rc, recvBatch, bufSize, f.feat.gro)
	c := newCoalescer(recvBatch*maxGSOSegments, d.vnet)
	for {
		n, err := r.recv()
		if err != nil {
			if stopped(err) {
				return nil
			}
			return fmt.Errorf("read udp: %w", err)
		}
		t := b.tab.Load()
		c.reset()
		for i := range n {
			from, data, segSize, trunc := r.msg(i)
			// The sender first: nothing a stranger sent is looked at
			// (docs/SECURITY.md), and all of it counts as not_peer.
			peer, known := t.byPublic[from]
			if !known {
				for range datagrams(len(data), segSize) {
					b.metrics.Drop(backend.DropNotPeer)
				}
				continue
			}
			if trunc || len(data) == 0 {
				b.metrics.Drop(backend.DropMalformed)
				continue
			}
			for rest := data; len(rest) > 0; {
				var seg []byte
				seg, rest = nextSegment(rest, segSize)
				src, dst, err := ipv4Addrs(seg)
				if err != nil {
					b.metrics.Drop(dropReason(err))
					continue
				}
				if reason, ok := t.admitFrom(peer, true, src, dst); !ok {
					b.metrics.Drop(reason)
					continue
				}
				if c.full() {
					if err := b.writeTun(c); err != nil {
						return err
					}
				}
				c.add(seg, from.As4())
			}
		}
		if err := b.writeTun(c); err != nil {
			return err
		}
	}
}

// writeTun writes the coalescer's packets, one writev each, and empties it.
// A packet the kernel refuses is counted and logged; only a stop ends the
// loop.
func (b *UDP) writeTun(c *coalescer) error {
	c.finish()
	for _, p := range c.pkts {
		err := b.fast.dev.writev(c.iovs[p.iov0:p.iov1])
		switch {
		case err == nil:
			b.metrics.DecapPackets.Add(uint64(p.segs))
			b.metrics.DecapBytes.Add(uint64(p.bytes))
		case stopped(err):
			return err
		default:
			for range p.segs {
				b.metrics.Drop(backend.DropWriteError)
			}
			b.log.Debug("tun write", "err", err, "segments", p.segs, "bytes", p.bytes)
		}
	}
	c.reset()
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
