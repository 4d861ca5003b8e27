package plan

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// NamePrefix starts the name of every namespace any lab creates.
const NamePrefix = "ol-"

// MaxNameLen is the longest lab name. Only namespace names carry it, and a
// namespace name is a file name in /run/netns (255 bytes), so the limit is
// ours, chosen to keep names readable; interface names never carry it.
const MaxNameLen = 32

// MaxIfName is the kernel's limit on interface names (IFNAMSIZ-1).
const MaxIfName = 15

var labNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// reservedPart matches a hyphen-separated part a lab name may not have: one
// that looks like the suffix of a lab's own namespaces (ul, etcd, etcd2, h3,
// c1). Without this rule the namespaces of lab "a-h1" (ol-a-h1-h2-c1) would
// parse as those of lab "a", and `down --name a` could not tell them apart.
var reservedPart = regexp.MustCompile(`^(ul|etcd[0-9]*|h[0-9]+|c[0-9]+)$`)

// CheckName validates a lab name: 1 to 32 characters of [a-z0-9-], starting
// with a letter, not ending with or doubling a hyphen, no part that looks
// like a namespace suffix. Every command that takes a lab name checks it
// here, so a name can never reach a path outside the lab's own directory.
func CheckName(name string) error {
	bad := func(rule string) error { return &FieldError{Field: "name", Value: strconv.Quote(name), Rule: rule} }
	switch {
	case name == "":
		return bad("a lab name is required")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("at most %d characters (this one has %d)", MaxNameLen, len(name)))
	case !labNameRE.MatchString(name):
		return bad("use lower-case letters, digits and '-', starting with a letter")
	case strings.HasSuffix(name, "-") || strings.Contains(name, "--"):
		return bad("a '-' must sit between two other characters")
	}
	for _, part := range strings.Split(name, "-")[1:] {
		if reservedPart.MatchString(part) {
			return bad(fmt.Sprintf("the part %q looks like a lab namespace suffix (ul, etcdN, hN, cN); pick another", part))
		}
	}
	return nil
}

// MaxNetworkNameLen bounds a tenant network's name: it is part of interface
// names inside a host (the container port "red-c12").
const MaxNetworkNameLen = 8

var networkNameRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

// CheckNetworkName validates a tenant network's name.
func CheckNetworkName(name string) error {
	bad := func(rule string) error { return &FieldError{Field: "network", Value: strconv.Quote(name), Rule: rule} }
	switch {
	case len(name) == 0 || len(name) > MaxNetworkNameLen:
		return bad(fmt.Sprintf("a network name has 1 to %d characters", MaxNetworkNameLen))
	case !networkNameRE.MatchString(name):
		return bad("use lower-case letters and digits, starting with a letter")
	case reservedPart.MatchString(name):
		return bad("looks like a lab namespace suffix (ul, etcdN, hN, cN); pick another")
	}
	return nil
}

// Names derives every name of one lab from its name, so the same lab always
// gets the same names.
type Names struct{ Lab string }

// Prefix is what all of this lab's namespaces start with.
func (n Names) Prefix() string { return NamePrefix + n.Lab + "-" }

// UnderlayNS holds the underlay bridge.
func (n Names) UnderlayNS() string { return n.Prefix() + "ul" }

// EtcdNS is etcd member k's namespace (1-based; member 1 is "etcd").
func (n Names) EtcdNS(k int) string {
	if k <= 1 {
		return n.Prefix() + "etcd"
	}
	return n.Prefix() + "etcd" + strconv.Itoa(k)
}

// Host is host i's name (1-based).
func (n Names) Host(i int) string { return "h" + strconv.Itoa(i) }

// HostNS is host i's namespace.
func (n Names) HostNS(i int) string { return n.Prefix() + n.Host(i) }

// Container is container j's name on its host; with a tenant network it
// carries the network's name ("red-c1").
func (n Names) Container(network string, j int) string {
	if network == "" {
		return "c" + strconv.Itoa(j)
	}
	return network + "-c" + strconv.Itoa(j)
}

// ContainerNS is the namespace of container j (of network, "" for the
// single-network lab) on host i.
func (n Names) ContainerNS(i int, network string, j int) string {
	return n.HostNS(i) + "-" + n.Container(network, j)
}

// Interface names. They live inside the lab's own namespaces, so they never
// carry the lab name and always fit the kernel's 15 characters.
const (
	UnderlayBridge  = "br0"  // in UnderlayNS
	HostIf          = "eth0" // every node's underlay interface, every container's interface
	ContainerBridge = "br0"  // in each host, the bridge runtime's
	CNIBridge       = "cni0" // in each host, the CNI runtime's (flannel's delegate default)
)

// HostPort is host i's port on the underlay bridge.
func HostPort(i int) string { return "h" + strconv.Itoa(i) }

// EtcdPort is etcd member k's port on the underlay bridge.
func EtcdPort(k int) string { return "etcd" + strconv.Itoa(k) }

// ContainerPort is the host-side veth of a container on the bridge runtime's
// bridge: it carries the container's name.
func ContainerPort(network string, j int) string { return Names{}.Container(network, j) }

// Owns reports whether the namespace name ns belongs to lab: it must be
// ol-LAB- followed by one of the lab's own suffixes (ul, etcd, etcdK, hI,
// hI-cJ, hI-NET-cJ). With CheckName's rule on name parts, no namespace can
// belong to two labs.
func (n Names) Owns(ns string) bool {
	rest, ok := strings.CutPrefix(ns, n.Prefix())
	if !ok {
		return false
	}
	return nsSuffix.MatchString(rest)
}

var nsSuffix = regexp.MustCompile(`^(ul|etcd[0-9]*|h[1-9][0-9]*(-([a-z][a-z0-9]*-)?c[1-9][0-9]*)?)$`)

// LabOf returns the lab a namespace name belongs to, when it has the shape of
// a lab namespace.
func LabOf(ns string) (string, bool) {
	rest, ok := strings.CutPrefix(ns, NamePrefix)
	if !ok {
		return "", false
	}
	// The lab name is everything before the first part that starts a suffix.
	parts := strings.Split(rest, "-")
	for k := 1; k < len(parts); k++ {
		lab := strings.Join(parts[:k], "-")
		if CheckName(lab) == nil && (Names{Lab: lab}).Owns(ns) {
			return lab, true
		}
	}
	return "", false
}

// MAC returns a locally administered MAC that is a pure function of kind and
// indexes, so a rerun of the same lab gets the same addresses.
func MAC(kind byte, a, b int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x4f, kind, byte(a >> 8), byte(a), byte(b)}
}

// MAC kinds.
const (
	MACHost      byte = 0x01
	MACContainer byte = 0x02
	MACEtcd      byte = 0x03
	MACPort      byte = 0x04
	MACBridge    byte = 0x05
)
