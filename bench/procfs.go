package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat. The kernel
// exports these in USER_HZ, which is 100 on every Linux architecture Go
// supports (CONFIG_HZ may differ; the exported unit does not).
const userHZ = 100

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
func parseVmRSS(status []byte) (uint64, error) { return parseStatusKiB(status, "VmRSS") }

// parseStatusKiB returns a "<field>: <n> kB" line of /proc/<pid>/status.
func parseStatusKiB(status []byte, field string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: %s %q: want \"<n> kB\"", field, strings.TrimSpace(v))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: %s %q: %w", field, f[0], err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("status: no %s line (a kernel thread or a zombie?)", field)
}

// procCPUTicks reads a process's utime+stime.
func procCPUTicks(pid int) (uint64, error) {
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

// procRSSKiB reads a process's resident set size (VmRSS) and the part of
// it that is anonymous memory (RssAnon; the rest is mostly the binary's
// mapped file pages, shared by every process of the same binary).
func procRSSKiB(pid int) (rss, anon uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	if rss, err = parseVmRSS(data); err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	if anon, err = parseStatusKiB(data, "RssAnon"); err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return rss, anon, nil
}

// Machine describes where a benchmark ran, from what the process can read.
type Machine struct {
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`  // logical CPUs in /proc/cpuinfo
	GoCPUs    int     `json:"goCPUs"` // what the Go runtime may use (affinity)
	MemoryGiB float64 `json:"memoryGiB"`
	Kernel    string  `json:"kernel"`
	Arch      string  `json:"arch"`
	GoVersion string  `json:"goVersion"`
	LoadAvg   string  `json:"loadAvg"` // 1, 5, 15 min at the start of the run
}

// ReadMachine fills a Machine; a field it cannot read stays empty.
func ReadMachine() Machine {
	m := Machine{GoCPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Arch: runtime.GOARCH}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU, m.Cores = parseCPUInfo(data)
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryGiB = parseMemTotalGiB(data)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = strings.TrimSpace(unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]))
		m.Arch = unix.ByteSliceToString(u.Machine[:])
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// parseCPUInfo returns the first "model name" and the number of
// "processor" entries.
func parseCPUInfo(data []byte) (model string, n int) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return model, n
}

// parseMemTotalGiB returns MemTotal from /proc/meminfo in GiB.
func parseMemTotalGiB(data []byte) float64 {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					return kb / (1 << 20)
				}
			}
		}
	}
	return 0
}

// String is the machine in one line.
func (m Machine) String() string {
	cpu := m.CPU
	if cpu == "" {
		cpu = "unknown CPU"
	}
	return fmt.Sprintf("%s, %d logical CPUs (Go may use %d), %.1f GiB memory, %s %s, %s", cpu, m.Cores, m.GoCPUs, m.MemoryGiB, m.Kernel, m.Arch, m.GoVersion)
}
