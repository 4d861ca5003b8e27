package topo

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckIfName(t *testing.T) {
	for _, ok := range []string{"eth0", "br0", "h1000", "red-c250", "flannel.1", "abcdefghijklmno"} {
		if err := CheckIfName(ok); err != nil {
			t.Errorf("CheckIfName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "abcdefghijklmnop", ".", "..", "a/b", "a:b", "a b"} {
		if err := CheckIfName(bad); err == nil {
			t.Errorf("CheckIfName(%q) accepted", bad)
		}
	}
}

func TestAttachmentCheck(t *testing.T) {
	good := Attachment{NodeNS: "ol-x-h1", NodeIf: "eth0", BridgeNS: "ol-x-ul", Bridge: "br0", Port: "h1",
		Addr: netip.MustParsePrefix("10.0.0.2/24"), Gateway: netip.MustParseAddr("10.0.0.1"), MTU: 1500}
	if err := good.check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mod  func(*Attachment)
		want string
	}{
		{func(a *Attachment) { a.Port = "a-very-long-port-name" }, "1 to 15"},
		{func(a *Attachment) { a.NodeNS = "" }, "both namespaces"},
		{func(a *Attachment) { a.MTU = 40 }, "MTU 40"},
		{func(a *Attachment) { a.Gateway = netip.MustParseAddr("10.0.1.1") }, "outside"},
		{func(a *Attachment) { a.Addr = netip.Prefix{} }, "needs an address"},
	} {
		a := good
		c.mod(&a)
		if err := a.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
}
