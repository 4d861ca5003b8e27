// Package linkem is a userspace link emulator for the lab: delay, jitter,
// loss, reordering, duplication, corruption and a rate limit on one host's
// underlay link, for kernels without sch_netem (this one, WSL2, minikube,
// many CI runners).
//
// # Where it sits
//
// Insert takes the host's port off the underlay bridge and puts a new veth
// pair's end on the bridge in its place; a relay (Run, the body of the hidden
// `overlaylab linkem` command) carries frames between the freed port and the
// pair's other end. The host sees nothing change. Remove puts the port back.
//
// # Data path
//
// One AF_PACKET socket per interface with PACKET_VNET_HDR: a TSO or USO
// super-frame arrives in one read with its virtio-net header and, when no
// per-packet decision needs it cut, leaves whole in one write, its deferred
// checksum still deferred. When loss, duplication, corruption, reordering or
// a rate apply to it, the relay cuts it itself into the wire packets the
// kernel would have made (TCPv4 and UDPv4, complete checksums), so every
// decision is per wire packet. A VXLAN frame carrying a TSO segment (the vxlan
// backend's) is always cut: a packet socket's virtio-net header cannot say
// "tunnel", and the kernel refuses such a frame whole.
//
// Corruption flips one bit of one byte of the IP packet, after any deferred
// checksum has been filled in, so the receiver sees a packet that fails its
// IPv4 or TCP/UDP checksum (a UDP datagram sent without checksum, like most
// VXLAN over IPv4, passes corrupted).
//
// # Delay line
//
// Each direction has a queue ordered by departure: departure = arrival (after
// the rate limit) + delay + jitter, where jitter is uniform in ±jitter but a
// packet never leaves before the one ahead of it, so jitter alone does not
// reorder. Reordering is netem's: a packet chosen for reordering skips the
// delay and leaves at once, overtaking those still delayed. The rate is a
// token bucket (burst RateBurst) in front of a bounded queue (RateQueue
// bytes): a packet that finds the queue full is dropped and counted. A
// timerfd wakes the sender when the first packet is due.
//
// # Determinism
//
// Every decision is drawn from a ChaCha8 stream keyed by (seed, direction,
// kind of decision), one draw per matched packet in arrival order (a wire
// packet; or a GSO frame, when only delay and jitter apply and it crosses
// whole). The same seed and the same sequence of matched packets give the
// same drops, duplicates, corruptions and reorderings. Link-layer housekeeping (ARP,
// IGMP, ICMPv6 neighbour discovery and MLD) is never matched, since kernel
// timers, not the traffic under test, decide when it is sent; a lost ARP
// reply would shift every later decision in a rerun.
package linkem
