package plan

import "net/netip"

// Addressing places a lab's nodes on its underlay: host i at the i-th
// address, etcd member k at the top, below the broadcast address, where no
// host index can reach it (a /24 keeps today's .250 for member 1).
type Addressing struct{ Underlay netip.Prefix }

// size is the number of addresses in the underlay.
func (a Addressing) size() int { return 1 << (32 - a.Underlay.Bits()) }

// HostCapacity is the most hosts the underlay holds.
func (a Addressing) HostCapacity() int { return a.size() - 2 - (EtcdSlots + 1) }

// Host is host i's address (1-based).
func (a Addressing) Host(i int) netip.Addr { return nth(a.Underlay.Addr(), i) }

// Etcd is etcd member k's address (1-based, k <= EtcdSlots).
func (a Addressing) Etcd(k int) netip.Addr { return nth(a.Underlay.Addr(), a.size()-1-(EtcdSlots+1)+k) }

// HostIndex is the inverse of Host: i for host i's address, 0 if ip is not
// a host address of this underlay.
func (a Addressing) HostIndex(ip netip.Addr) int {
	if !a.Underlay.Contains(ip) {
		return 0
	}
	i := int(u32(ip) - u32(a.Underlay.Addr()))
	if i < 1 || i > a.HostCapacity() {
		return 0
	}
	return i
}

// Prefix is ip with the underlay's prefix length, for an interface address.
func (a Addressing) Prefix(ip netip.Addr) netip.Prefix {
	return netip.PrefixFrom(ip, a.Underlay.Bits())
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func nth(base netip.Addr, n int) netip.Addr {
	v := u32(base) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// NthAddr is the address n after base.
func NthAddr(base netip.Addr, n int) netip.Addr { return nth(base, n) }
