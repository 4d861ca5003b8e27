package vxlan

import (
	"reflect"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TestFilterObjects checks the admission rule expression by expression:
// `meta nfproto ipv4 meta l4proto udp udp dport PORT ip saddr != @peers
// counter drop`, in an inet table of the agent's own, hooked on input.
func TestFilterObjects(t *testing.T) {
	fo := filterObjects(8472, "", 1)
	if fo.table.Name != filterTable || fo.table.Family != nftables.TableFamilyINet {
		t.Errorf("table = %s family %d, want %s in inet", fo.table.Name, fo.table.Family, filterTable)
	}
	if fo.set.Name != "peers" || fo.set.KeyType != nftables.TypeIPAddr || fo.set.Table != fo.table {
		t.Errorf("set = %+v, want peers of ipv4_addr in the table", fo.set)
	}
	if fo.chain.Hooknum == nil || *fo.chain.Hooknum != *nftables.ChainHookInput || fo.chain.Type != nftables.ChainTypeFilter || fo.chain.Table != fo.table {
		t.Errorf("chain = %+v, want a filter chain on the input hook", fo.chain)
	}
	if fo.chain.Priority == nil || *fo.chain.Priority != *nftables.ChainPriorityFilter {
		t.Errorf("chain priority = %v, want filter", fo.chain.Priority)
	}
	if fo.rule.Table != fo.table || fo.rule.Chain != fo.chain {
		t.Errorf("rule not in the table's chain")
	}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x21, 0x18}}, // 8472, network order
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: "peers", SetID: fo.set.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	if len(fo.rule.Exprs) != len(want) {
		t.Fatalf("rule has %d expressions, want %d", len(fo.rule.Exprs), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(fo.rule.Exprs[i], want[i]) {
			t.Errorf("expression %d = %#v, want %#v", i, fo.rule.Exprs[i], want[i])
		}
	}
}

// TestFilterPortBytes: the destination port is compared in network byte
// order for any port, not only the default.
func TestFilterPortBytes(t *testing.T) {
	for port, b := range map[int][2]byte{4789: {0x12, 0xb5}, 8472: {0x21, 0x18}, 1: {0, 1}, 65535: {0xff, 0xff}} {
		cmp, ok := filterObjects(port, "", 1).rule.Exprs[5].(*expr.Cmp)
		if !ok || !reflect.DeepEqual(cmp.Data, b[:]) {
			t.Errorf("port %d compared as %v, want %v", port, cmp, b)
		}
	}
}

// TestFilterObjectsNetwork: a network of a multi-network agent has its own
// table, and its rule also matches its VNI, three bytes at offset 12 of the
// transport header (UDP's 8, then the VXLAN header's flags and reserved
// bytes), so that another network's peers on the same port are not
// admitted to it.
func TestFilterObjectsNetwork(t *testing.T) {
	red, blue := filterObjects(8472, "red", 1), filterObjects(8472, "blue", 0x0a0b0c)
	if red.table.Name != "overlaylab-vxlan-red" || blue.table.Name != "overlaylab-vxlan-blue" {
		t.Errorf("tables %s and %s, want overlaylab-vxlan-red and overlaylab-vxlan-blue", red.table.Name, blue.table.Name)
	}
	if FilterTable("") != filterTable {
		t.Errorf("FilterTable(\"\") = %s, want the single-network %s", FilterTable(""), filterTable)
	}
	for _, tc := range []struct {
		fo  filterDef
		vni []byte
	}{{red, []byte{0, 0, 1}}, {blue, []byte{0x0a, 0x0b, 0x0c}}} {
		e := tc.fo.rule.Exprs
		if len(e) != 12 {
			t.Fatalf("%s: rule has %d expressions, want 12", tc.fo.table.Name, len(e))
		}
		want := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 3},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: tc.vni},
		}
		if !reflect.DeepEqual(e[6:8], want) {
			t.Errorf("%s: VNI match = %#v %#v, want %#v %#v", tc.fo.table.Name, e[6], e[7], want[0], want[1])
		}
		// Port before, then the same peer lookup and drop as a single network's.
		single := filterObjects(8472, "", 1).rule.Exprs
		if !reflect.DeepEqual(e[:6], single[:6]) || !reflect.DeepEqual(e[8:], single[6:]) {
			t.Errorf("%s: rule around the VNI match differs from the single-network rule", tc.fo.table.Name)
		}
		if l, ok := e[9].(*expr.Lookup); !ok || l.SetName != "peers" || !l.Invert || l.SetID != tc.fo.set.ID {
			t.Errorf("%s: expression 9 = %#v, want the inverted lookup in its own peers set", tc.fo.table.Name, e[9])
		}
	}
}
