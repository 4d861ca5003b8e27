package nsutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// envPrivate marks the re-executed test binary that runs inside its own
// mount namespace (made private), so the test can put RunDir in any state
// without touching the machine's.
const envPrivate = "NSUTIL_TEST_PRIVATE_MOUNTNS"

// inPrivateMountNS re-executes the test binary for this one test under
// `unshare --mount --propagation private` and reports its outcome; it returns
// true in the child, where the test body should run.
func inPrivateMountNS(t *testing.T) bool {
	t.Helper()
	skipUnlessRoot(t)
	if os.Getenv(envPrivate) == "1" {
		// Start from a fresh /run whose RunDir is not a mount point, as on
		// a machine where no tool has bound a namespace yet, and which
		// holds none of the machine's other names.
		if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, ""); err != nil {
			t.Fatalf("mount a tmpfs on /run: %v", err)
		}
		if err := os.MkdirAll(RunDir, 0o755); err != nil {
			t.Fatal(err)
		}
		return true
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1) (util-linux)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) (iproute2)")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), envPrivate+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in a private mount namespace: %v\n%s", err, out)
	}
	t.Logf("in a private mount namespace:\n%s", out)
	return false
}

// cleanup deletes the test's names whatever happened, so a failing test
// leaves nothing for the next one to trip over.
func cleanup(t *testing.T, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			if err := Delete(n); err != nil {
				t.Errorf("cleanup %s: %v", n, err)
			}
		}
	})
}

func ipNetns(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// listClean asserts that `ip netns list` prints no error (a name left
// unmounted makes it print "Peer netns reference is invalid").
func listClean(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || strings.Contains(string(out), "Error") {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	return string(out)
}

// createOldStyle binds a namespace in the plain RunDir without making it a
// mount point first: what overlaylab did before it followed iproute2.
func createOldStyle(t *testing.T, name string) {
	t.Helper()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	err = DoHandle(orig, func() error {
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func nsInode(t *testing.T, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(RunDir, name), &st); err != nil {
		t.Fatalf("stat %s: %v", name, err)
	}
	return st.Ino
}

func mustGone(t *testing.T, name string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(RunDir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still in %s (%v)", name, RunDir, err)
	}
}

// The lab first, then iproute2's first `ip netns add`: our names must stay
// deletable (they are on the shared mount point iproute2 would have made).
func TestLabThenIPRoute2(t *testing.T) {
	if !inPrivateMountNS(t) {
		return
	}
	cleanup(t, "ol-nstest-a", "ol-nstest-x")
	if err := Create("ol-nstest-a"); err != nil {
		t.Fatal(err)
	}
	ipNetns(t, "add", "ol-nstest-x")
	ipNetns(t, "del", "ol-nstest-x")
	if err := Delete("ol-nstest-a"); err != nil {
		t.Fatal(err)
	}
	mustGone(t, "ol-nstest-a")
	listClean(t)
}

// iproute2 first, then the lab, then iproute2 deletes its own.
func TestIPRoute2ThenLab(t *testing.T) {
	if !inPrivateMountNS(t) {
		return
	}
	cleanup(t, "ol-nstest-b", "ol-nstest-y")
	ipNetns(t, "add", "ol-nstest-y")
	if err := Create("ol-nstest-b"); err != nil {
		t.Fatal(err)
	}
	if out := listClean(t); !strings.Contains(out, "ol-nstest-b") || !strings.Contains(out, "ol-nstest-y") {
		t.Fatalf("ip netns list misses a name:\n%s", out)
	}
	ipNetns(t, "del", "ol-nstest-y")
	if err := Delete("ol-nstest-b"); err != nil {
		t.Fatal(err)
	}
	mustGone(t, "ol-nstest-b")
	listClean(t)
}

// A name bound before the convention (an older lab), then iproute2 covers
// RunDir: the name is stuck under the cover, and Delete must still remove it
// without losing iproute2's own name made after the cover.
func TestDeleteUnderIPRoute2Cover(t *testing.T) {
	if !inPrivateMountNS(t) {
		return
	}
	cleanup(t, "ol-nstest-c", "ol-nstest-d", "ol-nstest-z")
	createOldStyle(t, "ol-nstest-c")
	createOldStyle(t, "ol-nstest-d")
	keep := nsInode(t, "ol-nstest-d")
	ipNetns(t, "add", "ol-nstest-z") // covers RunDir with a recursive bind
	if err := Delete("ol-nstest-c"); err != nil {
		t.Fatalf("delete a name stuck under iproute2's mount: %v", err)
	}
	mustGone(t, "ol-nstest-c")
	if got := nsInode(t, "ol-nstest-d"); got != keep {
		t.Fatalf("ol-nstest-d now names another namespace (inode %d, was %d)", got, keep)
	}
	out := listClean(t)
	for _, n := range []string{"ol-nstest-d", "ol-nstest-z"} {
		if !strings.Contains(out, n) {
			t.Fatalf("%s lost:\n%s", n, out)
		}
	}
	ipNetns(t, "del", "ol-nstest-z")
	if err := Delete("ol-nstest-d"); err != nil {
		t.Fatal(err)
	}
	listClean(t)
}

// Names bound before the convention are carried onto the mount point when
// the lab makes it.
func TestEnsureRunDirCarriesOldNames(t *testing.T) {
	if !inPrivateMountNS(t) {
		return
	}
	cleanup(t, "ol-nstest-e", "ol-nstest-f", "ol-nstest-w")
	createOldStyle(t, "ol-nstest-e")
	was := nsInode(t, "ol-nstest-e")
	if err := Create("ol-nstest-f"); err != nil {
		t.Fatal(err)
	}
	if makeShared() != nil {
		t.Fatalf("%s is not a mount point after Create", RunDir)
	}
	if got := nsInode(t, "ol-nstest-e"); got != was {
		t.Fatalf("ol-nstest-e names another namespace after the carry-over")
	}
	ipNetns(t, "add", "ol-nstest-w")
	ipNetns(t, "del", "ol-nstest-w")
	for _, n := range []string{"ol-nstest-e", "ol-nstest-f"} {
		if err := Delete(n); err != nil {
			t.Fatal(err)
		}
		mustGone(t, n)
	}
	listClean(t)
}

// `ip netns exec NAME sleep` keeps running while the name is deleted, and
// the delete succeeds.
func TestDeleteWhileIPNetnsExec(t *testing.T) {
	if !inPrivateMountNS(t) {
		return
	}
	cleanup(t, "ol-nstest-g")
	if err := Create("ol-nstest-g"); err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("ip", "netns", "exec", "ol-nstest-g", "sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	// Wait until the child is inside the namespace.
	target := nsInode(t, "ol-nstest-g")
	for i := 0; i < 200; i++ {
		var st unix.Stat_t
		if unix.Stat("/proc/"+strconv.Itoa(sleep.Process.Pid)+"/ns/net", &st) == nil && st.Ino == target {
			break
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	if err := Delete("ol-nstest-g"); err != nil {
		t.Fatal(err)
	}
	mustGone(t, "ol-nstest-g")
	listClean(t)
}
