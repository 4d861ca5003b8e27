package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// One lock per lab serializes every command that changes it: an flock on
// <state dir>/lock, held for the whole command. A second command waits and
// says for whom (`lab X is busy (pid N: up, since 10:02:03); waiting`); the
// kernel drops the lock when its holder dies, so a crash never leaves a
// stale one. `down` removes the lock file with the lab while holding it: a
// waiter then finds that the file it locked is no longer the lab's and
// starts over (and finds no lab, or the new one of an `up` that raced it).

// lock is a held lab lock.
type lock struct{ f *os.File }

func lockPath(dir string) string { return filepath.Join(dir, "lock") }

// errNoDir says the lab's directory does not exist (and create was false).
var errNoDir = errors.New("no state dir")

// acquireLock takes the lab's lock. With create it makes the state dir
// (up); without, a missing dir is errNoDir. what names the command for
// whoever waits on it; wait gets the one "waiting" line.
func acquireLock(ctx context.Context, dir, name, what string, create bool, wait io.Writer) (*lock, error) {
	said := false
	for {
		if create {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("state dir: %w", err)
			}
		} else if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, errNoDir
		}
		f, err := os.OpenFile(lockPath(dir), os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, os.ErrNotExist) {
			continue // the dir went away between the two calls: start over
		}
		if err != nil {
			return nil, fmt.Errorf("lab %q: open lock: %w", name, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			if !said && wait != nil {
				fmt.Fprintf(wait, "lab %q is busy (%s); waiting\n", name, holder(f))
				said = true
			}
			f.Close()
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("lab %q: gave up waiting for its lock: %w", name, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lab %q: lock: %w", name, err)
		}
		if !sameFile(f, lockPath(dir)) {
			f.Close() // the lab was removed (and maybe made again) meanwhile
			continue
		}
		l := &lock{f: f}
		l.describe(what)
		return l, nil
	}
}

// holder reads who holds a lock, as its holder wrote it.
func holder(f *os.File) string {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	s := strings.TrimSpace(string(b[:n]))
	pid, rest, _ := strings.Cut(s, " ")
	if _, err := strconv.Atoi(pid); err != nil {
		return "another overlaylab command"
	}
	return "pid " + pid + ": " + rest
}

// describe records the holder for whoever waits.
func (l *lock) describe(what string) {
	_ = l.f.Truncate(0)
	_, _ = l.f.WriteAt([]byte(fmt.Sprintf("%d %s, since %s\n", os.Getpid(), what, time.Now().Format("15:04:05"))), 0)
}

func (l *lock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// sameFile reports whether the open f is still the file at path.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
