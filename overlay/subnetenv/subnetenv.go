// Package subnetenv reads and writes flannel's subnet.env: the file through
// which the agent tells local consumers (CNI plugin, container runtime, the
// next start of the agent itself) which subnet this host holds.
package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Keys written by Render, in flannel's order.
const (
	KeyNetwork = "FLANNEL_NETWORK"
	KeySubnet  = "FLANNEL_SUBNET"
	KeyMTU     = "FLANNEL_MTU"
	KeyIPMasq  = "FLANNEL_IPMASQ"
	// KeyRouteTable and KeyCTZone are written by a multi-network agent
	// (--networks) only: the kernel routing table the network is routed in
	// and its conntrack zone. The container runtime puts the network's
	// bridge into the same table and zone. Optional when reading.
	KeyRouteTable = "FLANNEL_ROUTE_TABLE"
	KeyCTZone     = "FLANNEL_CT_ZONE"
)

// Limits of the optional keys.
const (
	// MaxRouteTable is the largest routing table id (a u32; 0 is no table).
	// 253..255 are the kernel's default, main and local tables: a network
	// never gets those.
	MaxRouteTable = 1<<32 - 1
	// MaxCTZone is the largest conntrack zone (a u16; 0 is the default
	// zone every packet starts in, so a network never gets it).
	MaxCTZone = 1<<16 - 1
)

// Env is the content of subnet.env.
type Env struct {
	Network netip.Prefix
	// Subnet is the host's lease written as flannel does: the first host
	// address with the subnet's prefix length, e.g. 10.10.3.1/24. Use
	// SubnetFromLease to build it and LeaseSubnet to get the lease back.
	Subnet netip.Prefix
	MTU    int
	IPMasq bool
	// RouteTable and CTZone are FLANNEL_ROUTE_TABLE and FLANNEL_CT_ZONE;
	// zero means the key is absent (a single-network agent, or flannel).
	RouteTable uint32
	CTZone     uint16
}

// SubnetFromLease turns a leased subnet (10.10.3.0/24) into the form written
// to FLANNEL_SUBNET (10.10.3.1/24): the bridge/gateway address of the subnet.
func SubnetFromLease(lease netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(lease.Masked().Addr().Next(), lease.Bits())
}

// LeaseSubnet is the leased subnet, e.g. 10.10.3.0/24, which the agent passes
// to the subnet manager to get the same lease back after a restart.
func (e Env) LeaseSubnet() netip.Prefix { return e.Subnet.Masked() }

// Render produces the file content, byte for byte what flannel writes.
func Render(e Env) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s=%s\n", KeyNetwork, e.Network)
	fmt.Fprintf(&b, "%s=%s\n", KeySubnet, e.Subnet)
	fmt.Fprintf(&b, "%s=%d\n", KeyMTU, e.MTU)
	fmt.Fprintf(&b, "%s=%t\n", KeyIPMasq, e.IPMasq)
	if e.RouteTable != 0 {
		fmt.Fprintf(&b, "%s=%d\n", KeyRouteTable, e.RouteTable)
	}
	if e.CTZone != 0 {
		fmt.Fprintf(&b, "%s=%d\n", KeyCTZone, e.CTZone)
	}
	return b.Bytes()
}

// Write replaces path atomically: readers see the old file or the new one,
// never a partial write, even if the agent dies midway. The parent directory
// is created when missing.
func Write(path string, e Env) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The temp file must live in the same directory: rename is only atomic
	// within one file system.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(Render(e)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes 0600; the file is not secret and other local
	// consumers (CNI plugins run by the runtime) read it.
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Without fsync a crash after rename can leave an empty file in place.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Persist the rename itself; best effort since some file systems refuse
	// to sync directories and the data is already safe in the file.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Read parses a subnet.env file. Blank lines and # comments are skipped,
// unknown keys (e.g. flannel's FLANNEL_IPV6_*) are ignored, flannel's four
// keys are required and the multi-network keys (FLANNEL_ROUTE_TABLE,
// FLANNEL_CT_ZONE) are optional.
func Read(path string) (Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Env{}, fmt.Errorf("read subnet env: %w", err)
	}
	return parse(path, data)
}

// ErrMissingKey is wrapped by Read when a required key is absent.
var ErrMissingKey = errors.New("missing required key")

func parse(path string, data []byte) (Env, error) {
	var e Env
	seen := map[string]int{} // key → line, for required and duplicate checks
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("%s:%d: malformed line %q: want KEY=VALUE", path, n, line)
		}
		key = strings.TrimSpace(key)
		val = unquote(strings.TrimSpace(val))
		bad := func(rule string) error {
			return fmt.Errorf("%s:%d: %s %q: %s", path, n, key, val, rule)
		}
		switch key {
		case KeyNetwork, KeySubnet, KeyMTU, KeyIPMasq, KeyRouteTable, KeyCTZone:
		default:
			continue
		}
		if first, dup := seen[key]; dup {
			return Env{}, fmt.Errorf("%s:%d: %s: duplicate key (first on line %d)", path, n, key, first)
		}
		seen[key] = n
		switch key {
		case KeyNetwork:
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() || p.Masked() != p {
				return Env{}, bad("want an IPv4 network like 10.10.0.0/16")
			}
			e.Network = p
		case KeySubnet:
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() {
				return Env{}, bad("want an IPv4 address with prefix like 10.10.3.1/24")
			}
			e.Subnet = p
		case KeyMTU:
			mtu, err := strconv.Atoi(val)
			if err != nil || mtu <= 0 || mtu > 65535 {
				return Env{}, bad("want an integer 1..65535")
			}
			e.MTU = mtu
		case KeyIPMasq:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return Env{}, bad("want true or false")
			}
			e.IPMasq = b
		case KeyRouteTable:
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n == 0 || isReservedTable(n) {
				return Env{}, bad(fmt.Sprintf("want a routing table id 1..%d other than 253, 254, 255", uint64(MaxRouteTable)))
			}
			e.RouteTable = uint32(n)
		case KeyCTZone:
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil || n == 0 {
				return Env{}, bad(fmt.Sprintf("want a conntrack zone 1..%d", MaxCTZone))
			}
			e.CTZone = uint16(n)
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, k := range []string{KeyNetwork, KeySubnet, KeyMTU, KeyIPMasq} {
		if _, ok := seen[k]; !ok {
			return Env{}, fmt.Errorf("%s: %s: %w", path, k, ErrMissingKey)
		}
	}
	return e, nil
}

// isReservedTable: the kernel's default (253), main (254) and local (255)
// tables are shared by everything on the host, never a network's own.
func isReservedTable(n uint64) bool { return n >= 253 && n <= 255 }

// unquote strips one pair of matching quotes: the file is shell-sourced, so a
// hand-edited value may carry them.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}
