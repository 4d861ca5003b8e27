// Package nstest gives tests what every root test of the project needs: a
// clean skip without root, and throwaway named network namespaces that are
// removed when the test ends, whatever way it ends.
//
// Names are ol-t<pid>-<tag>-<n>: unique per process and call, so parallel
// test binaries and a killed earlier run never collide, and they carry the
// project's prefix, so `overlaylab down --all` removes what a killed test
// binary left behind.
package nstest

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// SkipUnlessRoot skips t when it does not run as root; why says what the
// test would have needed root for ("creates network namespaces").
func SkipUnlessRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

var counter atomic.Int32

// Name returns a fresh namespace name for tag without creating anything.
func Name(tag string) string {
	return fmt.Sprintf("ol-t%d-%s-%d", os.Getpid()%100000, tag, counter.Add(1))
}

// Netns creates a named namespace with lo up, skipping t without root, and
// deletes it at cleanup (an error deleting it fails the test). It returns
// the name, usable with `ip -n`, nsutil.DoNamed and the lab's capture.
func Netns(t testing.TB, tag string) string {
	t.Helper()
	SkipUnlessRoot(t, "creates network namespaces")
	name := Name(tag)
	if err := nsutil.Create(name); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := nsutil.Delete(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	// No descriptor of the namespace outlives this call: a test that
	// deletes the name must see the namespace (and its links) go.
	err := nsutil.DoNamed(name, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return name
}

// NsHandle opens the namespace name, closed at cleanup.
func NsHandle(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	ns, err := nsutil.Handle(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// Handle is a netlink handle inside the namespace name, closed at cleanup.
func Handle(t testing.TB, name string) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(NsHandle(t, name))
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return h
}
