// Package procfs reads what the lab and the bench need from /proc: a
// process's CPU time and resident memory, and the machine's memory.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// UserHZ is the unit of utime/stime in /proc/<pid>/stat. The kernel
// exports these in USER_HZ, which is 100 on every Linux architecture Go
// supports (CONFIG_HZ may differ; the exported unit does not).
const UserHZ = 100

// parseStatCPU returns utime+stime (in clock ticks) from the text of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	// After ")" come fields 3 (state), 4, ...; utime and stime are 14 and 15.
	f := strings.Fields(string(stat[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(f), stime+1)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime %q: %w", f[utime], err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime %q: %w", f[stime], err)
	}
	return u + s, nil
}

// parseVmRSS returns VmRSS in KiB from the text of /proc/<pid>/status.
func parseVmRSS(status []byte) (uint64, error) { return ParseKiB(status, "VmRSS") }

// ParseKiB returns the value of a "<field>: <n> kB" line, as
// /proc/<pid>/status and /proc/meminfo write them.
func ParseKiB(text []byte, field string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s %q: want \"<n> kB\"", field, strings.TrimSpace(v))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s %q: %w", field, f[0], err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s line", field)
}

// CPUTicks reads a process's utime+stime.
func CPUTicks(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	t, err := parseStatCPU(data)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return t, nil
}

// RSSKiB reads a process's resident set size (VmRSS) and the part of
// it that is anonymous memory (RssAnon; the rest is mostly the binary's
// mapped file pages, shared by every process of the same binary).
func RSSKiB(pid int) (rss, anon uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	if rss, err = parseVmRSS(data); err != nil {
		return 0, 0, fmt.Errorf("pid %d: status: %w (a kernel thread or a zombie?)", pid, err)
	}
	if anon, err = ParseKiB(data, "RssAnon"); err != nil {
		return 0, 0, fmt.Errorf("pid %d: status: %w", pid, err)
	}
	return rss, anon, nil
}

// MemInfoKiB reads a field of /proc/meminfo ("MemAvailable").
func MemInfoKiB(field string) (uint64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	v, err := ParseKiB(data, field)
	if err != nil {
		return 0, fmt.Errorf("meminfo: %w", err)
	}
	return v, nil
}
