package udp

import (
	"net/netip"
	"time"
)

// The forwarding table. The datapath reads it with one atomic load per batch
// and never locks; writers publish a new immutable table. Rebuilding both
// maps for every peer change made a large lab quadratic: each of N agents
// copied up to N entries for each of N joins, and the garbage drove the
// collector (profiled on a 500-host lab: most of an agent's start-up CPU).
// So a change publishes the same base maps with a small map of recent
// changes on top (a delta), and the base is rebuilt only when the delta
// grows past maxDelta or the peers have been quiet for settleAfter, after
// which lookups are back to one map access.

// maxDelta is the most changes carried on top of the base maps.
const maxDelta = 32

// settleAfter is how long after the last change the base is rebuilt.
const settleAfter = time.Second

// table is an immutable snapshot of the peers.
type table struct {
	subnetLen int
	own       netip.Prefix
	bySubnet  map[netip.Prefix]route
	byPublic  map[netip.Addr]netip.Prefix
	// delta holds the changes since the base maps were built, which win
	// over them; nil when there are none.
	delta *delta
}

type delta struct {
	bySubnet map[netip.Prefix]deltaRoute
	byPublic map[netip.Addr]deltaPeer
}

type deltaRoute struct {
	r    route
	gone bool
}

type deltaPeer struct {
	p    netip.Prefix
	gone bool
}

// lookup finds the route to the subnet holding dst.
func (t *table) lookup(dst netip.Addr) (route, bool) {
	p, err := dst.Prefix(t.subnetLen)
	if err != nil {
		return route{}, false
	}
	if t.delta != nil {
		if d, ok := t.delta.bySubnet[p]; ok {
			return d.r, !d.gone
		}
	}
	r, ok := t.bySubnet[p]
	return r, ok
}

// peerOf finds the subnet of the peer whose PublicIP is addr.
func (t *table) peerOf(addr netip.Addr) (netip.Prefix, bool) {
	if t.delta != nil {
		if d, ok := t.delta.byPublic[addr]; ok {
			return d.p, !d.gone
		}
	}
	p, ok := t.byPublic[addr]
	return p, ok
}

// peerSet is the truth the published tables follow: the peers by subnet
// and by PublicIP (one peer per address; should two leases name the same
// PublicIP, the latest set wins, as it always did).
type peerSet struct {
	bySubnet map[netip.Prefix]route
	byPublic map[netip.Addr]netip.Prefix
	batching bool        // between BeginPeers and EndPeers: publish at EndPeers
	dirty    bool        // a change was recorded in the batch
	settle   *time.Timer // rebuilds the base once changes stop
}

func newPeerSet() peerSet {
	return peerSet{bySubnet: map[netip.Prefix]route{}, byPublic: map[netip.Addr]netip.Prefix{}}
}

// changed is what one change touched, for the delta.
type changed struct {
	subnet netip.Prefix
	addrs  []netip.Addr
}

// set adds or replaces a peer's route.
func (s *peerSet) set(r route) changed {
	c := changed{subnet: r.subnet, addrs: []netip.Addr{r.dst.Addr()}}
	if old, ok := s.bySubnet[r.subnet]; ok && old.dst.Addr() != r.dst.Addr() {
		c.addrs = append(c.addrs, old.dst.Addr())
		s.unindex(old)
	}
	s.bySubnet[r.subnet] = r
	s.byPublic[r.dst.Addr()] = r.subnet
	return c
}

// remove forgets a peer's subnet.
func (s *peerSet) remove(p netip.Prefix) changed {
	c := changed{subnet: p}
	if old, ok := s.bySubnet[p]; ok {
		delete(s.bySubnet, p)
		s.unindex(old)
		c.addrs = append(c.addrs, old.dst.Addr())
	}
	return c
}

// unindex drops r's address from byPublic, or points it at another peer
// with the same address.
func (s *peerSet) unindex(r route) {
	a := r.dst.Addr()
	if s.byPublic[a] != r.subnet {
		return
	}
	delete(s.byPublic, a)
	for p, o := range s.bySubnet {
		if p != r.subnet && o.dst.Addr() == a {
			s.byPublic[a] = p
			return
		}
	}
}

// changeLocked publishes one change: a table with the same base and the
// change on top, or a fresh one when the delta would grow too large. In a
// batch it only records the change.
func (b *UDP) changeLocked(c changed) {
	if b.peers.batching {
		b.peers.dirty = true
		return
	}
	old := b.tab.Load()
	n := 0
	if old.delta != nil {
		n = len(old.delta.bySubnet)
	}
	if n >= maxDelta {
		b.publishLocked(old.own)
		return
	}
	d := &delta{bySubnet: make(map[netip.Prefix]deltaRoute, n+1), byPublic: map[netip.Addr]deltaPeer{}}
	if old.delta != nil {
		for k, v := range old.delta.bySubnet {
			d.bySubnet[k] = v
		}
		for k, v := range old.delta.byPublic {
			d.byPublic[k] = v
		}
	}
	r, ok := b.peers.bySubnet[c.subnet]
	d.bySubnet[c.subnet] = deltaRoute{r: r, gone: !ok}
	for _, a := range c.addrs {
		p, ok := b.peers.byPublic[a]
		d.byPublic[a] = deltaPeer{p: p, gone: !ok}
	}
	t := *old
	t.delta = d
	b.tab.Store(&t)
	b.settleLocked()
}

// settleLocked (re)arms the rebuild that folds the delta into fresh base
// maps once the peers have been quiet for settleAfter.
func (b *UDP) settleLocked() {
	if b.peers.settle != nil {
		b.peers.settle.Reset(settleAfter)
		return
	}
	b.peers.settle = time.AfterFunc(settleAfter, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if t := b.tab.Load(); t.delta != nil && !b.peers.batching {
			b.publishLocked(t.own)
		}
	})
}

// publishLocked builds a fresh table from the peers, without a delta.
func (b *UDP) publishLocked(own netip.Prefix) {
	t := &table{
		subnetLen: b.cfg.SubnetLen,
		own:       own,
		bySubnet:  make(map[netip.Prefix]route, len(b.peers.bySubnet)),
		byPublic:  make(map[netip.Addr]netip.Prefix, len(b.peers.byPublic)),
	}
	for p, r := range b.peers.bySubnet {
		t.bySubnet[p] = r
	}
	for a, p := range b.peers.byPublic {
		t.byPublic[a] = p
	}
	b.tab.Store(t)
}
