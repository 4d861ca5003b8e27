// Package backend defines what the agent asks of a datapath. Each backend
// (udp, vxlan, host-gw) implements Backend; the agent owns the lease and the
// watch loop and tells the backend which peers exist.
package backend

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"

	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// External is the host interface that carries overlay traffic.
type External struct {
	Iface    *net.Interface
	PublicIP netip.Addr // published in the lease; peers send to it
	LocalIP  netip.Addr // address on Iface used as the source of encapsulated packets
}

// Published is what a backend wants written into the lease value.
type Published struct {
	BackendType string
	BackendData json.RawMessage
	MTU         int // MTU for containers (FLANNEL_MTU)
}

// Backend is one datapath. Calls come from one goroutine, in this order:
// Prepare, Configure, then AddPeer/RemovePeer/Reconcile any number of times
// while Run runs (on a goroutine of its own), and Close last, only after Run
// has returned.
type Backend interface {
	// Prepare creates what must exist before a lease is held (the vxlan
	// device, whose MAC is published) and returns the lease attributes.
	Prepare(ctx context.Context) (Published, error)
	// Configure sets the device up for our own lease. Called again with the
	// new lease if the lease changes.
	Configure(ctx context.Context, own subnet.Lease) error
	// AddPeer programs the datapath for a peer's lease (added or changed).
	AddPeer(ctx context.Context, peer subnet.Lease) error
	// RemovePeer removes exactly that peer's entries.
	RemovePeer(ctx context.Context, peer subnet.Lease) error
	// Reconcile removes the kernel state this backend owns (routes marked
	// with RouteProtocol, entries on its own device) that none of the peers
	// it holds now justifies: what an earlier run left for peers that left
	// while no agent watched. The agent calls it once the current leases
	// are programmed, at start and after every watch resync. It never
	// touches what the agent does not own.
	Reconcile(ctx context.Context) error
	// Run runs datapath loops (if any) until ctx is done.
	Run(ctx context.Context) error
	// Close removes the kernel state this backend created that should not
	// outlive the agent.
	Close() error
}

// Batcher is a Backend that takes several peer changes as one: the agent
// calls BeginPeers before a run of AddPeer and RemovePeer calls and EndPeers
// after it, and the backend may defer per-change work until EndPeers (the
// udp backend rebuilds its forwarding table once, not once per peer: a
// thousand peers at start would otherwise cost a million map inserts).
type Batcher interface {
	BeginPeers()
	EndPeers()
}

// Options are per-agent datapath settings that are not part of the shared
// network config.
type Options struct {
	// UDPMode selects the udp backend's datapath: "fast" (batched, with
	// offloads; the default) or "simple" (one packet per syscall, the
	// reference).
	UDPMode string
	// Workers is the number of parallel datapath workers for backends that
	// have them; 0 = the backend's default.
	Workers int

	// The rest is set only in multi-network mode (--networks), where one
	// agent serves several networks that may overlap.

	// Network is the network's name ("" in single-network mode). Kernel
	// objects that would otherwise clash between two networks of one agent
	// carry it (the vxlan admission table).
	Network string
	// Table is the routing table the backend puts its routes in; 0 is the
	// main table (single-network mode). With a table, a backend with a
	// device of its own (vxlan, udp) also routes the whole Network through
	// that device in the table, and never puts a route into main.
	Table int
	// DeviceName names the udp backend's TUN device ("" = flannel0).
	DeviceName string
}

// Factory makes a backend for a network config.
type Factory func(cfg *config.Config, ext External, m *Metrics, o Options) (Backend, error)
