package subnetenv

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sample = Env{
	Network: netip.MustParsePrefix("10.10.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.10.3.1/24"),
	MTU:     1472,
	IPMasq:  false,
}

func TestRenderGolden(t *testing.T) {
	const want = "FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
	if got := string(Render(sample)); got != want {
		t.Fatalf("Render\n got %q\nwant %q", got, want)
	}
	e := sample
	e.IPMasq = true
	if got := string(Render(e)); !strings.HasSuffix(got, "FLANNEL_IPMASQ=true\n") {
		t.Fatalf("IPMasq true rendered as %q", got)
	}
}

func TestLeaseConversion(t *testing.T) {
	lease := netip.MustParsePrefix("10.10.3.0/24")
	if got := SubnetFromLease(lease); got != sample.Subnet {
		t.Fatalf("SubnetFromLease = %s", got)
	}
	if got := sample.LeaseSubnet(); got != lease {
		t.Fatalf("LeaseSubnet = %s", got)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "flannel", "subnet.env") // parents do not exist yet
	if err := Write(path, sample); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != sample {
		t.Fatalf("Read = %+v, want %+v", got, sample)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}

	// Overwrite many times: the file is always complete and no temp files remain.
	for i := range 20 {
		e := sample
		e.MTU = 1400 + i
		if err := Write(path, e); err != nil {
			t.Fatal(err)
		}
		got, err := Read(path)
		if err != nil || got.MTU != 1400+i {
			t.Fatalf("after write %d: %+v, %v", i, got, err)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "subnet.env" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only subnet.env", names)
	}
}

func TestWriteFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be makes the rename fail.
	path := filepath.Join(dir, "subnet.env")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, sample); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp file left behind: %d entries", len(entries))
	}
}

func TestReadTolerant(t *testing.T) {
	in := "# written by flannel\n\nFLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_IPV6_NETWORK=fd00::/56\n" +
		"FLANNEL_SUBNET=\"10.10.3.1/24\"\n  FLANNEL_MTU = 1472\nFLANNEL_IPMASQ=true\nOTHER=x\n"
	got, err := parse("subnet.env", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := sample
	want.IPMasq = true
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
}

func TestReadErrors(t *testing.T) {
	full := string(Render(sample))
	tests := []struct {
		name, in, want string
	}{
		{"no equals", "FLANNEL_NETWORK 10.10.0.0/16\n", `f.env:1: malformed line "FLANNEL_NETWORK 10.10.0.0/16": want KEY=VALUE`},
		{"bad network", strings.Replace(full, "10.10.0.0/16", "10.10.0.0", 1), `f.env:1: FLANNEL_NETWORK "10.10.0.0": want an IPv4 network like 10.10.0.0/16`},
		{"network host bits", strings.Replace(full, "10.10.0.0/16", "10.10.0.1/16", 1), `f.env:1: FLANNEL_NETWORK "10.10.0.1/16": want an IPv4 network`},
		{"bad subnet", strings.Replace(full, "10.10.3.1/24", "fd00::1/64", 1), `f.env:2: FLANNEL_SUBNET "fd00::1/64": want an IPv4 address with prefix`},
		{"bad mtu", strings.Replace(full, "1472", "big", 1), `f.env:3: FLANNEL_MTU "big": want an integer 1..65535`},
		{"zero mtu", strings.Replace(full, "1472", "0", 1), `f.env:3: FLANNEL_MTU "0": want an integer 1..65535`},
		{"bad ipmasq", strings.Replace(full, "false", "maybe", 1), `f.env:4: FLANNEL_IPMASQ "maybe": want true or false`},
		{"duplicate", full + "FLANNEL_MTU=1400\n", `f.env:5: FLANNEL_MTU: duplicate key (first on line 3)`},
		{"missing subnet", strings.Replace(full, "FLANNEL_SUBNET=10.10.3.1/24\n", "", 1), `f.env: FLANNEL_SUBNET: missing required key`},
		{"empty", "", `f.env: FLANNEL_NETWORK: missing required key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("f.env", []byte(tt.in))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %v, want prefix %q", err, tt.want)
			}
		})
	}
	_, err := parse("f.env", nil)
	if !errors.Is(err, ErrMissingKey) {
		t.Fatalf("missing key error does not wrap ErrMissingKey: %v", err)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v, want ErrNotExist", err)
	}
}

// TestTenantKeys: a multi-network agent's file carries FLANNEL_ROUTE_TABLE
// and FLANNEL_CT_ZONE after flannel's four keys; they survive a round trip,
// and a file without them (flannel's, or a single-network agent's) reads
// as zero, which Render leaves out again.
func TestTenantKeys(t *testing.T) {
	e := sample
	e.RouteTable, e.CTZone = 1001, 1001
	const want = "FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n" +
		"FLANNEL_ROUTE_TABLE=1001\nFLANNEL_CT_ZONE=1001\n"
	if got := string(Render(e)); got != want {
		t.Fatalf("Render\n got %q\nwant %q", got, want)
	}
	path := filepath.Join(t.TempDir(), "red.env")
	if err := Write(path, e); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil || got != e {
		t.Fatalf("Read = %+v, %v; want %+v", got, err, e)
	}
	// Either key alone, at the edges of its range, in any order.
	got, err = parse("f.env", []byte("FLANNEL_CT_ZONE=65535\n"+string(Render(sample))+"FLANNEL_ROUTE_TABLE=4294967295\n"))
	if err != nil || got.CTZone != 65535 || got.RouteTable != 4294967295 {
		t.Fatalf("edges: %+v, %v", got, err)
	}
	got, err = parse("f.env", Render(sample))
	if err != nil || got.RouteTable != 0 || got.CTZone != 0 {
		t.Fatalf("without the keys: %+v, %v; want zero table and zone", got, err)
	}

	full := string(Render(sample))
	for _, tc := range []struct{ line, want string }{
		{"FLANNEL_ROUTE_TABLE=0", `f.env:5: FLANNEL_ROUTE_TABLE "0": want a routing table id`},
		{"FLANNEL_ROUTE_TABLE=254", `f.env:5: FLANNEL_ROUTE_TABLE "254": want a routing table id 1..4294967295 other than 253, 254, 255`},
		{"FLANNEL_ROUTE_TABLE=4294967296", `f.env:5: FLANNEL_ROUTE_TABLE "4294967296"`},
		{"FLANNEL_ROUTE_TABLE=main", `f.env:5: FLANNEL_ROUTE_TABLE "main"`},
		{"FLANNEL_CT_ZONE=0", `f.env:5: FLANNEL_CT_ZONE "0": want a conntrack zone 1..65535`},
		{"FLANNEL_CT_ZONE=65536", `f.env:5: FLANNEL_CT_ZONE "65536"`},
		{"FLANNEL_CT_ZONE=-1", `f.env:5: FLANNEL_CT_ZONE "-1"`},
	} {
		if _, err := parse("f.env", []byte(full+tc.line+"\n")); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want prefix %q", tc.line, err, tc.want)
		}
	}
	if _, err := parse("f.env", []byte(full+"FLANNEL_CT_ZONE=7\nFLANNEL_CT_ZONE=7\n")); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("duplicate FLANNEL_CT_ZONE: %v", err)
	}
}
