// Package nsutil runs work inside a network namespace without leaking the
// namespace switch to other goroutines.
//
// The pattern: lock the goroutine to its OS thread, remember the thread's
// current namespace, switch, do the work, switch back, and unlock only when the
// switch back succeeded. If it failed the thread stays locked and Go discards it
// when the goroutine ends, so no other goroutine ever runs in the wrong netns.
package nsutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where iproute2 keeps named network namespaces.
const RunDir = "/var/run/netns"

// Do runs fn with the calling OS thread inside the namespace at path.
func Do(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	return DoHandle(target, fn)
}

// DoNamed runs fn inside the named namespace (as listed by `ip netns`).
func DoNamed(name string, fn func() error) error {
	return Do(filepath.Join(RunDir, name), fn)
}

// DoHandle runs fn inside the namespace given by an open handle.
func DoHandle(target netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine: if restoring fails we let its thread die instead of
	// poisoning the caller's thread.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Thread stays locked: Go terminates it when this goroutine exits.
			errc <- fmt.Errorf("restore netns: %w (work result: %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Exists reports whether a named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(RunDir, name))
	return err == nil
}

// DialContext returns a dialer whose sockets are created inside the named
// namespace. A socket keeps the namespace it was created in, so the connection
// works from any goroutine afterwards.
func DialContext(nsName string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := DoNamed(nsName, func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			conn = c
			return err
		})
		return conn, err
	}
}

// Create makes a new named namespace the way iproute2 does (RunDir a shared
// mount point first, then the namespace bound onto a file there), without
// leaving the calling thread in it (netns.NewNamed switches the thread into
// the new namespace).
func Create(name string) error {
	if err := ensureRunDir(); err != nil {
		return err
	}
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	return DoHandle(orig, func() error {
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		h.Close()
		return nil
	})
}

// Delete removes a named namespace; a missing one is not an error. A name
// whose file exists with nothing mounted on it (its creator was killed
// between creating the file and bind-mounting the namespace there) is
// removed too, and so is a name stuck under a later mount on RunDir (see
// liftStale). It returns only when the name is gone.
func Delete(name string) error {
	path := filepath.Join(RunDir, name)
	switch err := unix.Unmount(path, unix.MNT_DETACH); {
	case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: not a mount point
	case errors.Is(err, unix.ENOENT):
		return nil
	default:
		return fmt.Errorf("delete netns %s: unmount: %w", name, err)
	}
	err := os.Remove(path)
	switch {
	case err == nil, os.IsNotExist(err):
		return nil
	case errors.Is(err, unix.EBUSY):
		// Still a mount point below a mount on RunDir that was made after
		// the name was bound (iproute2's first `ip netns add`).
		return liftStale(name)
	}
	return fmt.Errorf("delete netns %s: %w", name, err)
}

// List returns the named namespaces whose names start with prefix.
func List(prefix string) ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) >= len(prefix) && e.Name()[:len(prefix)] == prefix {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Handle opens a named namespace.
func Handle(name string) (netns.NsHandle, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return h, fmt.Errorf("open netns %s: %w", name, err)
	}
	return h, nil
}
