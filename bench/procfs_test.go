package bench

import (
	"strings"
	"testing"
)

func TestParseCPUInfoAndMemInfo(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  9454 48-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC  9454 48-Core Processor\n"
	model, n := parseCPUInfo([]byte(cpuinfo))
	if model != "AMD EPYC 9454 48-Core Processor" || n != 2 {
		t.Errorf("parseCPUInfo = %q, %d", model, n)
	}
	if g := parseMemTotalGiB([]byte("MemTotal:       24684000 kB\nMemFree: 1 kB\n")); g < 23.5 || g > 23.6 {
		t.Errorf("parseMemTotalGiB = %v, want ~23.54", g)
	}
	m := ReadMachine()
	if m.GoVersion == "" || m.GoCPUs < 1 || !strings.HasPrefix(m.Kernel, "Linux") {
		t.Errorf("ReadMachine = %+v", m)
	}
}
