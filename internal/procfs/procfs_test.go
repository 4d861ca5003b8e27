package procfs

import (
	"os"
	"testing"
)

// A stat line whose command name holds spaces and parentheses, as
// /proc/<pid>/stat prints it; utime=1234, stime=567.
const sampleStat = "4242 (over lab) (x)) S 1 4242 4242 0 -1 4194560 2210 0 0 0 1234 567 0 0 20 0 9 0 123456 1337982976 9876 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

const sampleStatus = `Name:	overlaylab
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Pid:	4242
VmPeak:	 1306652 kB
VmSize:	 1306652 kB
VmHWM:	   41120 kB
VmRSS:	   39504 kB
RssAnon:	   14200 kB
RssFile:	   25304 kB
Threads:	9
`

func TestParseStatCPU(t *testing.T) {
	got, err := parseStatCPU([]byte(sampleStat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 1234+567 {
		t.Errorf("parseStatCPU = %d, want %d", got, 1234+567)
	}
	for _, bad := range []string{"", "4242 no-parens S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 2210 0 0 0 abc 567 0"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) should fail", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS([]byte(sampleStatus))
	if err != nil {
		t.Fatal(err)
	}
	if got != 39504 {
		t.Errorf("parseVmRSS = %d, want 39504", got)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\nState:\tS (sleeping)\n")); err == nil {
		t.Error("a status without VmRSS should fail")
	}
	if _, err := parseVmRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Error("an unexpected unit should fail")
	}
	if got, err := ParseKiB([]byte(sampleStatus), "RssAnon"); err != nil || got != 14200 {
		t.Errorf("RssAnon = %d, %v; want 14200", got, err)
	}
}

func TestOwnProcess(t *testing.T) {
	// The real files of this process parse.
	if _, err := CPUTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	kib, anon, err := RSSKiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if kib == 0 || anon == 0 || anon > kib {
		t.Errorf("RSS of this process: %d KiB, of which %d KiB anonymous", kib, anon)
	}
}

func TestParseKiBMemInfo(t *testing.T) {
	got, err := ParseKiB([]byte("MemTotal:       24575996 kB\nMemFree:         1000 kB\nMemAvailable:   20123456 kB\n"), "MemAvailable")
	if err != nil || got != 20123456 {
		t.Fatalf("got %d, %v; want 20123456", got, err)
	}
	if _, err := ParseKiB([]byte("MemTotal: 1 kB\n"), "MemAvailable"); err == nil {
		t.Fatal("a meminfo without MemAvailable parsed")
	}
	if kib, err := MemInfoKiB("MemAvailable"); err != nil || kib == 0 {
		t.Fatalf("this machine's MemAvailable: %d, %v", kib, err)
	}
}
