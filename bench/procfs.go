package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/procfs"
)

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

// parseMemTotalGiB returns MemTotal from /proc/meminfo in GiB (0 when it
// cannot).
func parseMemTotalGiB(data []byte) float64 {
	kib, _ := procfs.ParseKiB(data, "MemTotal")
	return float64(kib) / (1 << 20)
}

// String is the machine in one line.
func (m Machine) String() string {
	cpu := m.CPU
	if cpu == "" {
		cpu = "unknown CPU"
	}
	return fmt.Sprintf("%s, %d logical CPUs (Go may use %d), %.1f GiB memory, %s %s, %s", cpu, m.Cores, m.GoCPUs, m.MemoryGiB, m.Kernel, m.Arch, m.GoVersion)
}
