package subnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseAttrs is the value stored under a lease key. The JSON form is flannel's:
// {"PublicIP":"192.168.77.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}
type LeaseAttrs struct {
	PublicIP    netip.Addr      // marshals as "a.b.c.d"
	PublicIPv6  *netip.Addr     // marshals as null when nil
	BackendType string          // the backend that owns BackendData
	BackendData json.RawMessage // backend-specific (e.g. vxlan's VNI and VtepMAC); "null" when empty
}

// leaseAttrsJSON fixes field order and names independently of LeaseAttrs'
// methods (a plain alias would recurse into MarshalJSON).
type leaseAttrsJSON struct {
	PublicIP    netip.Addr
	PublicIPv6  *netip.Addr
	BackendType string
	BackendData json.RawMessage
}

// MarshalJSON writes flannel's wire format. An empty BackendData becomes null
// rather than an (invalid) empty value.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	w := leaseAttrsJSON(a)
	if len(w.BackendData) == 0 {
		w.BackendData = nil
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads flannel's format, including values written by flannel
// versions that omit PublicIPv6 or BackendData. A null BackendData reads back
// as nil so that a marshal/unmarshal round trip is the identity.
func (a *LeaseAttrs) UnmarshalJSON(b []byte) error {
	var w leaseAttrsJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if string(w.BackendData) == "null" {
		w.BackendData = nil
	}
	*a = LeaseAttrs(w)
	return nil
}

// Lease is one host's claim on a subnet.
type Lease struct {
	Subnet netip.Prefix
	Attrs  LeaseAttrs
	// Expiration is known for leases this Manager granted or renewed. Leases
	// read from the registry (Leases, WatchLeases) leave it zero: finding it
	// costs one TimeToLive round trip per key, which every agent would pay for
	// every peer, and routes do not depend on it. Use Manager.Expiration.
	Expiration time.Time
	EtcdLease  clientv3.LeaseID
	Revision   int64 // ModRevision of the key
}

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	Added EventType = iota
	Removed
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Removed:
		return "removed"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is a change of the lease set.
type Event struct {
	Type  EventType
	Lease Lease
}

// SubnetKey is the last element of a lease key, flannel's "10.10.3.0-24".
func SubnetKey(p netip.Prefix) string {
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseSubnetKey parses a lease key's last element. Only the canonical form
// SubnetKey produces is accepted: a key that differs only in spelling would
// otherwise alias another key's subnet and defeat the create-if-absent txn.
func ParseSubnetKey(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: want ADDR-BITS", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: bad address %q", s, s[:i])
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil || strconv.Itoa(bits) != s[i+1:] {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: bad prefix length %q", s, s[i+1:])
	}
	p := netip.PrefixFrom(a, bits)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: prefix length %d out of range", s, bits)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: host bits set (want %s)", s, SubnetKey(p.Masked()))
	}
	if SubnetKey(p) != s {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: not canonical (want %s)", s, SubnetKey(p))
	}
	return p, nil
}

// kvToLease decodes one lease key/value.
func kvToLease(subnetsPrefix string, kv *mvccpb.KeyValue) (Lease, error) {
	key := string(kv.Key)
	p, err := ParseSubnetKey(strings.TrimPrefix(key, subnetsPrefix))
	if err != nil {
		return Lease{}, err
	}
	var attrs LeaseAttrs
	if err := json.Unmarshal(kv.Value, &attrs); err != nil {
		return Lease{}, fmt.Errorf("lease %s: bad value %q: %w", key, kv.Value, err)
	}
	return Lease{
		Subnet:    p,
		Attrs:     attrs,
		EtcdLease: clientv3.LeaseID(kv.Lease),
		Revision:  kv.ModRevision,
	}, nil
}
