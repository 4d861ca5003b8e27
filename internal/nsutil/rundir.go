package nsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Named namespaces follow iproute2's convention: RunDir is a mount point
// with shared propagation (bind-mounted on itself the first time), and each
// name is a bind mount of a namespace onto a file in it. iproute2 sets that
// up itself before it binds its first name, with a recursive bind; if names
// were bound in the plain directory before that, they end up *under* its
// mount: `umount` reaches only the copy on top and `unlink` then fails with
// EBUSY, leaving the name mounted underneath and pinning its namespace.
//
// So the lab makes RunDir a shared mount point before it binds a name
// (ensureRunDir), and when it finds names stuck under such a mount it lifts
// the mounts on RunDir, takes its names out, and puts every other name back
// on a fresh shared mount point (liftStale). Both run under an flock on
// RunDir, so two labs never do it at once.

// lockRunDir serializes changes to RunDir's mounts among our processes.
func lockRunDir() (func(), error) {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", RunDir, err)
	}
	f, err := os.Open(RunDir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", RunDir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", RunDir, err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// makeShared gives RunDir shared propagation; it fails with EINVAL when
// RunDir is not a mount point.
func makeShared() error {
	return unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

// ensureRunDir makes RunDir a shared mount point, as iproute2 does; names
// already bound in the plain directory are carried onto the new mount.
func ensureRunDir() error {
	unlock, err := lockRunDir()
	if err != nil {
		return err
	}
	defer unlock()
	switch err := makeShared(); {
	case err == nil:
		return nil
	case !errors.Is(err, unix.EINVAL):
		return fmt.Errorf("make %s shared: %w", RunDir, err)
	}
	// Not a mount point yet: pin and unmount the names bound in the plain
	// directory, mount RunDir on itself, bind the names back.
	pins, err := pinNames()
	if err != nil {
		return err
	}
	defer pins.close()
	if err := pins.unmountAll(); err != nil {
		return err
	}
	return remount(pins, "")
}

// liftStale removes name from RunDir when it is stuck under a mount on
// RunDir (unlink said EBUSY): every mount on RunDir is lifted, the names
// found on each level are pinned by descriptor and unmounted, then RunDir
// becomes a single shared mount point again with every name but this one
// bound back. No namespace is lost: each stays pinned until it is bound
// again.
func liftStale(name string) error {
	unlock, err := lockRunDir()
	if err != nil {
		return err
	}
	defer unlock()
	all := &pinned{fds: map[string]*os.File{}}
	defer all.close()
	for level := 0; ; level++ {
		if level > 16 {
			return fmt.Errorf("%s: more than 16 mounts stacked on it", RunDir)
		}
		p, err := pinNames()
		if err != nil {
			return err
		}
		err = p.unmountAll()
		all.merge(p)
		if err != nil {
			return err
		}
		// A name's file exists on every level (it is one directory), so
		// only the mounts differ; when RunDir is no longer a mount point
		// every level has been seen.
		if err := makeShared(); errors.Is(err, unix.EINVAL) {
			break
		}
		if err := unix.Unmount(RunDir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("lift the mount on %s: %w", RunDir, err)
		}
	}
	path := filepath.Join(RunDir, name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = remount(all, name)
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return remount(all, name)
}

// remount makes the plain RunDir a shared mount point (bound on itself) and
// binds every pinned name but skip back onto it.
func remount(all *pinned, skip string) error {
	if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on itself: %w", RunDir, err)
	}
	if err := makeShared(); err != nil {
		return fmt.Errorf("make %s shared: %w", RunDir, err)
	}
	return all.rebind(skip)
}

// pinned holds a descriptor of each named namespace, which keeps the
// namespace alive while its name is unmounted.
type pinned struct {
	fds   map[string]*os.File
	order []string
}

// pinNames opens every name in RunDir that has a namespace mounted on it
// (a plain file, e.g. left by a crash, is skipped).
func pinNames() (*pinned, error) {
	ents, err := os.ReadDir(RunDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	p := &pinned{fds: map[string]*os.File{}}
	for _, e := range ents {
		path := filepath.Join(RunDir, e.Name())
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("pin netns %s: %w", e.Name(), err)
		}
		p.fds[e.Name()] = f
		p.order = append(p.order, e.Name())
	}
	return p, nil
}

func (p *pinned) unmountAll() error {
	for _, name := range p.order {
		if err := unix.Unmount(filepath.Join(RunDir, name), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount netns %s: %w", name, err)
		}
	}
	return nil
}

// merge adopts q's descriptors for names p does not hold yet (a name seen
// on a higher level wins: it is the one tools saw).
func (p *pinned) merge(q *pinned) {
	for _, name := range q.order {
		if _, ok := p.fds[name]; ok {
			q.fds[name].Close()
			continue
		}
		p.fds[name] = q.fds[name]
		p.order = append(p.order, name)
	}
	q.fds, q.order = nil, nil
}

// rebind binds every pinned namespace back onto its name, except skip.
func (p *pinned) rebind(skip string) error {
	var errs []error
	for _, name := range p.order {
		if name == skip {
			continue
		}
		path := filepath.Join(RunDir, name)
		src := "/proc/self/fd/" + strconv.Itoa(int(p.fds[name].Fd()))
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errs = append(errs, fmt.Errorf("rebind netns %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (p *pinned) close() {
	for _, f := range p.fds {
		f.Close()
	}
}
