package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Processes inside a lab's namespaces are found through the namespaces, not
// by name or pattern: a process belongs to the lab when its network
// namespace (/proc/PID/ns/net) is one of the lab's. That finds what the lab
// started and what a user started there (`overlaylab exec h2/c1 -- iperf3
// -s -D`, `ip netns exec ol-x-h1 sleep 600`), and nothing else.

// nsID identifies a network namespace (the nsfs device and inode).
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{dev: st.Dev, ino: st.Ino}, true
}

// namespaceIDs maps the given named namespaces to their IDs (missing names
// are skipped).
func namespaceIDs(names []string) map[nsID]string {
	ids := map[nsID]string{}
	for _, n := range names {
		if id, ok := statNS(filepath.Join(nsutil.RunDir, n)); ok {
			ids[id] = n
		}
	}
	return ids
}

// proc is a process found inside a lab namespace.
type proc struct {
	PID   int
	Comm  string
	Netns string
}

func (p proc) String() string { return fmt.Sprintf("%d (%s in %s)", p.PID, p.Comm, p.Netns) }

// processesIn lists the processes whose network namespace is one of ids.
func processesIn(ids map[nsID]string) []proc {
	if len(ids) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, ok := statNS("/proc/" + e.Name() + "/ns/net")
		if !ok {
			continue
		}
		if ns, mine := ids[id]; mine {
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			out = append(out, proc{PID: pid, Comm: strings.TrimSpace(string(comm)), Netns: ns})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// stopInNamespaces ends every process inside the namespaces: SIGTERM, then
// SIGKILL after grace. Each is signalled through a pidfd opened while it was
// seen inside the namespace and checked again, so a recycled PID is never
// hit. It returns the processes it ended.
func stopInNamespaces(names []string, grace time.Duration) ([]proc, error) {
	ids := namespaceIDs(names)
	found := processesIn(ids)
	type target struct {
		p  proc
		fd int
	}
	var ts []target
	for _, p := range found {
		fd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue // gone already
		}
		// Still the same process in the same namespace?
		if id, ok := statNS("/proc/" + strconv.Itoa(p.PID) + "/ns/net"); !ok || ids[id] == "" {
			unix.Close(fd)
			continue
		}
		ts = append(ts, target{p, fd})
	}
	defer func() {
		for _, t := range ts {
			unix.Close(t.fd)
		}
	}()
	var errs []error
	signal := func(sig syscall.Signal) {
		for _, t := range ts {
			if err := unix.PidfdSendSignal(t.fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("signal %s: %w", t.p, err))
			}
		}
	}
	exited := func() bool {
		for _, t := range ts {
			if pidfdAlive(t.fd) {
				return false
			}
		}
		return true
	}
	signal(unix.SIGTERM)
	for deadline := time.Now().Add(grace); time.Now().Before(deadline) && !exited(); {
		time.Sleep(20 * time.Millisecond)
	}
	if !exited() {
		signal(unix.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !exited(); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var ended []proc
	for _, t := range ts {
		ended = append(ended, t.p)
		if pidfdAlive(t.fd) {
			errs = append(errs, fmt.Errorf("process %s did not end", t.p))
		}
	}
	return ended, errors.Join(errs...)
}

// pidfdAlive reports whether the process behind a pidfd still runs: the
// pidfd polls readable once it exits (zombies count as ended).
func pidfdAlive(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err == nil && n == 0
}
