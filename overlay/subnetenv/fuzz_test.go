package subnetenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRead reads arbitrary file content. Whatever Read accepts must keep
// Read's own rules and be an Env that Render writes and Read reads back
// unchanged.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
		"# written by flannel\n\nFLANNEL_NETWORK=10.10.0.0/16\r\nFLANNEL_SUBNET=\"10.10.3.1/24\"\nFLANNEL_MTU='1450'\nFLANNEL_IPMASQ=true\nFLANNEL_IPV6_NETWORK=fd00::/48\n",
		"  FLANNEL_NETWORK = 0.0.0.0/0 \nFLANNEL_SUBNET=255.255.255.255/32\nFLANNEL_MTU=+65535\nFLANNEL_IPMASQ=1",
		"FLANNEL_IPMASQ=T\nFLANNEL_MTU=1\nFLANNEL_SUBNET=10.0.0.5/8\nFLANNEL_NETWORK=10.0.0.0/8\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nFLANNEL_ROUTE_TABLE=1001\nFLANNEL_CT_ZONE=1001\n",
		"FLANNEL_CT_ZONE=007\nFLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nFLANNEL_ROUTE_TABLE=\"4294967295\"\n",
		// Bad ones.
		"",
		"FLANNEL_NETWORK=10.10.0.0/16\n",
		"FLANNEL_NETWORK=10.10.0.1/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=fd00::/48\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=65536\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=0\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=maybe\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=::ffff:10.10.3.1/120\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nFLANNEL_ROUTE_TABLE=255\n",
		"FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nFLANNEL_CT_ZONE=0\n",
		"no equals sign\n",
		"FLANNEL_NETWORK=\"10.10.0.0/16'\n",
		"\x00\xff=\n",
		"FLANNEL_MTU=" + strings.Repeat("9", 70000) + "\n",
	} {
		f.Add([]byte(s))
	}
	// One directory per fuzzing process: the target runs sequentially there,
	// and a fresh directory per input would dominate the run time.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "subnet.env")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		e, err := Read(path)
		if err != nil {
			if e != (Env{}) {
				t.Fatalf("Read returned %+v with error %v", e, err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if !e.Network.IsValid() || !e.Network.Addr().Is4() || e.Network.Masked() != e.Network ||
			!e.Subnet.IsValid() || !e.Subnet.Addr().Is4() || e.MTU < 1 || e.MTU > 65535 ||
			(e.RouteTable >= 253 && e.RouteTable <= 255) {
			t.Fatalf("Read accepted an Env that breaks its own rules: %+v\ninput: %q", e, data)
		}

		out := filepath.Join(dir, "rendered.env")
		if err := os.WriteFile(out, Render(e), 0o644); err != nil {
			t.Fatal(err)
		}
		e2, err := Read(out)
		if err != nil {
			t.Fatalf("Read(Render(%+v)) = %v\ninput: %q\nrendered: %q", e, err, data, Render(e))
		}
		if e2 != e {
			t.Fatalf("round trip changed the Env\ninput: %q\nfirst:  %+v\nsecond: %+v", data, e, e2)
		}

	})
}
