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
//   - Buffers are allocated once; packets never cross goroutines: each
//     worker (workers.go) has its own queue of flannel0 and its own socket,
//     one goroutine reading the queue and sending, another receiving and
//     writing to the queue.
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
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

// fastQueue is one worker's share of the kernel state: a queue of flannel0
// and a socket on the backend port.
type fastQueue struct {
	dev  *tunDev
	conn *net.UDPConn
	rc   syscall.RawConn
	ep   *epollSet // both, when one goroutine serves both directions (several workers)
}

// fastPath is the fast datapath's kernel state: one queue per worker.
type fastPath struct {
	queues []*fastQueue
	feat   features
	steer  bool // the reuseport group picks sockets by inner flow
}

// prepareFast creates flannel0 with one queue per worker and as many
// sockets, with every offload the kernel and OffloadsEnv allow.
func (b *UDP) prepareFast() error {
	n := b.workers
	fds, vnet, uso, err := openVnetTun(b.dev, n, b.offl.tun, b.log)
	if err != nil {
		return err
	}
	f := &fastPath{feat: features{vnetHdr: vnet, uso: uso}}
	for i, fd := range fds {
		dev, err := newTunDev(fd, vnet)
		if err != nil {
			closeFDs(fds[i+1:])
			f.close()
			return fmt.Errorf("udp backend: tun %s queue %d: %w", b.dev, i, err)
		}
		f.queues = append(f.queues, &fastQueue{dev: dev})
	}
	if err := f.openSockets(b.cfg.Backend.Port, b.offl); err != nil {
		f.close()
		return fmt.Errorf("udp backend: %w", err)
	}
	if n > 1 {
		if err := f.openEpollSets(); err != nil {
			f.close()
			return fmt.Errorf("udp backend: %w", err)
		}
	}
	b.fast = f
	b.log.Info("fast udp datapath", "workers", n, "tun_vnet_hdr", f.feat.vnetHdr, "tun_tso", f.feat.vnetHdr, "tun_uso", f.feat.uso,
		"udp_gso", f.feat.gso, "udp_gro", f.feat.gro, "flow_steering", f.steer, "offloads_env", os.Getenv(OffloadsEnv))
	// The hot syscalls are raw and keep their thread's P (see above), so
	// workers run at once only on as many Ps: a worker count asked for
	// explicitly (the default follows GOMAXPROCS) gets them. The agent
	// process exists for its datapath; nothing else in it wants fewer.
	if p := runtime.GOMAXPROCS(0); n > p {
		runtime.GOMAXPROCS(n)
		b.log.Info("raised GOMAXPROCS to the number of udp workers", "from", p, "to", n)
	}
	return nil
}

// openSockets opens one socket on port per queue, with large buffers and
// the UDP offloads that are allowed and available. Several sockets share
// the port (SO_REUSEPORT) and the steering program (steer.go) picks one per
// inner flow; port 0 (tests) binds them all to the first one's port.
func (f *fastPath) openSockets(port int, offl offloads) error {
	n := len(f.queues)
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	for i, q := range f.queues {
		pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("listen on port %d (socket %d of %d): %w", port, i+1, n, err)
		}
		conn := pc.(*net.UDPConn)
		q.conn = conn
		if port == 0 {
			port = conn.LocalAddr().(*net.UDPAddr).Port
		}
		rc, err := conn.SyscallConn()
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		q.rc = rc
		var gso, gro bool
		cerr := rc.Control(func(fd uintptr) {
			s := int(fd)
			setBuf(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
			setBuf(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
			if offl.gso {
				// Support shows as a readable option (Linux 4.18+); the send
				// path falls back per message if a send is refused anyway.
				_, err := unix.GetsockoptInt(s, unix.SOL_UDP, unix.UDP_SEGMENT)
				gso = err == nil
			}
			if offl.gro {
				gro = unix.SetsockoptInt(s, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
			}
		})
		if cerr != nil {
			return fmt.Errorf("socket options: %w", cerr)
		}
		if i == 0 {
			f.feat.gso, f.feat.gro = gso, gro
		} else if gso != f.feat.gso || gro != f.feat.gro {
			return fmt.Errorf("socket %d of %d: UDP GSO %v, GRO %v, unlike the first socket's %v, %v", i+1, n, gso, gro, f.feat.gso, f.feat.gro)
		}
	}
	if n == 1 {
		return nil
	}
	var aerr error
	if err := f.queues[0].rc.Control(func(fd uintptr) { aerr = attachSteering(int(fd), n) }); err != nil {
		return fmt.Errorf("steering: %w", err)
	}
	if aerr != nil {
		return aerr
	}
	f.steer = true
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

// openVnetTun creates the TUN device with n queues (IFF_MULTI_QUEUE when n
// > 1; one queue is the classic single-queue device), with a virtio-net
// header and the TCP offloads when wanted and possible, else without. It
// returns a descriptor per queue and whether the header is on and whether
// UDP segmentation offload is available too.
func openVnetTun(name string, n int, want bool, log *slog.Logger) (fds []int, vnet, uso bool, err error) {
	var mq uint16
	if n > 1 {
		mq = unix.IFF_MULTI_QUEUE
		// A single-queue device is exclusive (the kernel refuses a second
		// attach with EBUSY); a multi-queue one takes queues from anyone
		// who asks. So check that nobody holds the device, before and after
		// attaching ours: a second agent must fail, not share flannel0.
		if err := tunQueuesHeld(name, 0); err != nil {
			return nil, false, false, err
		}
		defer func() {
			if err == nil {
				if err = tunQueuesHeld(name, n); err != nil {
					closeFDs(fds)
					fds = nil
				}
			}
		}()
	}
	if want {
		fds, err = tunQueues(name, n, unix.IFF_VNET_HDR|mq)
		if err != nil {
			return nil, false, false, err
		}
		const tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		const udp = unix.TUN_F_USO4 | unix.TUN_F_USO6
		// Offloads are the device's, not a queue's: set once.
		if err := unix.IoctlSetInt(fds[0], unix.TUNSETOFFLOAD, tcp); err == nil {
			uso = unix.IoctlSetInt(fds[0], unix.TUNSETOFFLOAD, tcp|udp) == nil
			return fds, true, uso, nil
		} else {
			log.Warn("tun offloads refused; reading one packet at a time", "err", err)
		}
		// Closing the last descriptor deletes the device: create it again.
		closeFDs(fds)
	}
	fds, err = tunQueues(name, n, mq)
	return fds, false, false, err
}

// tunQueuesHeld checks that the TUN device name has exactly want queues
// attached (a device that does not exist has none).
func tunQueuesHeld(name string, want int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) && want == 0 {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	t, ok := link.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("%s exists and is a %s device, not a TUN device", name, link.Type())
	}
	if t.Queues != want {
		return fmt.Errorf("tun %s has %d queues attached, want %d: another process (another agent?) holds it", name, t.Queues, want)
	}
	return nil
}

// tunQueues opens n queues of the TUN device name.
func tunQueues(name string, n int, flags uint16) ([]int, error) {
	fds := make([]int, 0, n)
	for i := range n {
		fd, err := tunFD(name, flags)
		if err != nil {
			closeFDs(fds)
			if i > 0 {
				err = fmt.Errorf("queue %d of %d: %w", i+1, n, err)
			}
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
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
		log.Warn("cannot raise the tun queue length", "dev", link.Attrs().Name, "err", err)
	}
	if f.feat.vnetHdr {
		if err := netlink.LinkSetGSOMaxSegs(link, tunBatch); err != nil {
			log.Warn("cannot cap the tun GSO segments; a batch of very small segments that does not fit a send batch will be dropped", "dev", link.Attrs().Name, "err", err)
		}
	}
}

// openEpollSets gives every queue the epoll set of its two descriptors, for
// a worker that serves both directions on one goroutine.
func (f *fastPath) openEpollSets() error {
	for i, q := range f.queues {
		tfd, err := rawFD(q.dev.rc)
		if err != nil {
			return err
		}
		sfd, err := rawFD(q.rc)
		if err != nil {
			return err
		}
		if q.ep, err = newEpollSet(tfd, sfd); err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
	}
	return nil
}

func (f *fastPath) close() error {
	var errs []error
	for _, q := range f.queues {
		if q.ep != nil {
			errs = append(errs, q.ep.close())
		}
		if q.conn != nil {
			errs = append(errs, q.conn.Close())
		}
		if q.dev != nil {
			errs = append(errs, q.dev.close())
		}
	}
	return errors.Join(errs...)
}

// stop wakes every worker's loops.
func (f *fastPath) stop() {
	for _, q := range f.queues {
		_ = q.dev.file.SetDeadline(immediate)
		_ = q.conn.SetDeadline(immediate)
		if q.ep != nil {
			_ = q.ep.file.SetDeadline(immediate)
		}
	}
}

// stopped says whether err only means the loops were told to stop.
func stopped(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}
