package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// peerEntries is the overlay state a host's kernel holds for its peers.
type peerEntries struct {
	routes []string // destination prefixes of routes not on the container bridge or the underlay
	neighs []string // "ip lladdr" on overlay devices
	fdb    []string // "mac dst ip" on overlay devices
}

// entriesOn reads routes, neighbours and FDB entries inside a host netns.
func entriesOn(ns string) peerEntries {
	h, err := nsutil.Handle(ns)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer nl.Close()
	var e peerEntries
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	for _, r := range routes {
		if r.Dst != nil && r.Gw != nil {
			e.routes = append(e.routes, r.Dst.String()+" via "+r.Gw.String())
			e.routes = append(e.routes, r.Dst.String())
		}
	}
	if l, err := nl.LinkByName("flannel.1"); err == nil {
		ns, _ := nl.NeighList(l.Attrs().Index, unix.AF_INET)
		for _, n := range ns {
			e.neighs = append(e.neighs, n.IP.String()+" "+n.HardwareAddr.String())
		}
		fdb, _ := nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		for _, n := range fdb {
			if n.IP != nil {
				e.fdb = append(e.fdb, n.HardwareAddr.String()+" "+n.IP.String())
			}
		}
	}
	sort.Strings(e.routes)
	sort.Strings(e.neighs)
	sort.Strings(e.fdb)
	return e
}

// mentions lists entries that refer to host h (its subnet, its underlay IP
// or its VTEP MAC).
func (e peerEntries) mentions(h lab.HostState) []string {
	var out []string
	for _, s := range e.all() {
		if refersTo(s, h) {
			out = append(out, s)
		}
	}
	return out
}

// without drops the entries that refer to host h.
func (e peerEntries) without(h lab.HostState) []string {
	var out []string
	for _, s := range e.all() {
		if !refersTo(s, h) {
			out = append(out, s)
		}
	}
	return out
}

func (e peerEntries) all() []string {
	var out []string
	out = append(out, e.routes...)
	out = append(out, e.neighs...)
	return append(out, e.fdb...)
}

func refersTo(s string, h lab.HostState) bool {
	p := netip.MustParsePrefix(h.Subnet)
	for _, f := range strings.Fields(s) {
		if f == h.Subnet || f == h.UnderlayIP {
			return true
		}
		if a, err := netip.ParseAddr(f); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// deleteLease removes a host's lease key, as an operator would.
func deleteLease(st *lab.State, sub string) {
	p := netip.MustParsePrefix(sub)
	key := "/coreos.com/network/subnets/" + subnet.SubnetKey(p)
	cli, err := st.EtcdClient()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.Delete(ctx, key)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

// metrics fetches an agent's /metrics from inside its host namespace.
func metrics(ns string) string {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nsutil.DialContext(ns)(ctx, network, addr)
		}, DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:9285/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var peersRE = regexp.MustCompile(`(?m)^overlaylab_peers (\d+)$`)

// peersGauge is the agent's overlaylab_peers, or -1.
func peersGauge(ns string) int {
	m := peersRE.FindStringSubmatch(metrics(ns))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// putConfig writes the network config key directly.
func putConfig(st *lab.State, value string) {
	putKey(st, "/coreos.com/network/config", value)
}

// putKey writes one key of the lab's etcd.
func putKey(st *lab.State, key, value string) {
	cli, err := st.EtcdClient()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, key, value)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}
