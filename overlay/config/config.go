// Package config holds the overlay network configuration that every agent
// reads from etcd at <prefix>/config. The JSON format, the defaults and the
// validation rules follow upstream flannel, so a flannel config can be used
// unchanged and a config written here can be read by flannel.
package config

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Backend type names, spelled (case-sensitively) as flannel spells them.
const (
	BackendUDP    = "udp"
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
)

// Default backend ports (flannel's).
const (
	DefaultUDPPort   = 8285
	DefaultVXLANPort = 8472
	DefaultVXLANVNI  = 1
)

// Limits enforced by Validate.
const (
	// MaxNetworkBits makes /28 the smallest network, as in flannel: anything
	// smaller cannot hold the skipped first subnet plus a leasable /30.
	MaxNetworkBits = 28
	// MaxSubnetLen: a /31 or /32 subnet leaves no room for a gateway and a container.
	MaxSubnetLen = 30
	MinMTU       = 68 // RFC 791 minimum IPv4 MTU
	MaxMTU       = 65535
	MaxVNI       = 1<<24 - 1
)

// Config is the network configuration shared by all agents.
type Config struct {
	Network   netip.Prefix
	SubnetLen int
	SubnetMin netip.Addr // first address of the first subnet that may be leased
	SubnetMax netip.Addr // first address of the last subnet that may be leased
	MTU       int        // 0 means derive from the external interface
	Backend   Backend
}

// Backend selects and parameterises the encapsulation.
type Backend struct {
	Type string // "udp", "vxlan", "host-gw"
	Port int    // udp default 8285, vxlan default 8472, host-gw 0
	VNI  int    // vxlan default 1; 0 otherwise

	// Extra keeps backend keys this package does not interpret (for example
	// flannel's vxlan "DirectRouting"), so that Parse→Marshal does not silently
	// drop settings another implementation may rely on.
	Extra map[string]json.RawMessage
}

// FieldError is a rejected field. Its message names the field, the offending
// value and the rule, e.g. `config: SubnetLen 31: must be at most 30`.
type FieldError struct {
	Field string // e.g. "SubnetLen", "Backend.Type"
	Value string // formatted value (strings quoted); empty when the field is missing
	Rule  string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("config: %s: %s", e.Field, e.Rule)
	}
	return fmt.Sprintf("config: %s %s: %s", e.Field, e.Value, e.Rule)
}

func fieldErr(field, value, rule string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Rule: fmt.Sprintf(rule, args...)}
}

// rawConfig mirrors the JSON document. Strings are parsed by hand so that a bad
// address yields a FieldError naming the field rather than a generic text
// unmarshalling error. encoding/json matches keys case-insensitively, exactly
// like flannel (which uses encoding/json too), and ignores unknown keys such as
// EnableIPv4, EnableIPv6 and IPv6Network.
type rawConfig struct {
	Network   *string
	SubnetLen int
	SubnetMin string
	SubnetMax string
	MTU       int
	Backend   json.RawMessage
}

type rawBackend struct {
	Type string
	Port int
	VNI  int
}

// Parse decodes a flannel network config, applies the defaults and validates it.
func Parse(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, jsonError(data, err)
	}
	c := &Config{SubnetLen: raw.SubnetLen, MTU: raw.MTU}

	if raw.Network == nil || *raw.Network == "" {
		return nil, fieldErr("Network", "", "required")
	}
	p, err := netip.ParsePrefix(*raw.Network)
	if err != nil {
		return nil, fieldErr("Network", strconv.Quote(*raw.Network), "not a CIDR prefix (want e.g. \"10.10.0.0/16\")")
	}
	c.Network = p

	if c.SubnetMin, err = parseAddr("SubnetMin", raw.SubnetMin); err != nil {
		return nil, err
	}
	if c.SubnetMax, err = parseAddr("SubnetMax", raw.SubnetMax); err != nil {
		return nil, err
	}
	if c.Backend, err = parseBackend(raw.Backend, data); err != nil {
		return nil, err
	}

	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil // default applies
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fieldErr(field, strconv.Quote(s), "not an IP address")
	}
	return a, nil
}

func parseBackend(raw json.RawMessage, doc []byte) (Backend, error) {
	var b Backend
	if len(raw) == 0 || string(raw) == "null" {
		return b, nil
	}
	var rb rawBackend
	if err := json.Unmarshal(raw, &rb); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Offsets are relative to the Backend object; name the field with
			// its full path instead, which is what the reader needs.
			field := "Backend"
			if te.Field != "" {
				field += "." + te.Field
			}
			return b, fmt.Errorf("config: %s: got JSON %s, want %s", field, te.Value, jsonKind(te.Type))
		}
		return b, jsonError(doc, err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return b, jsonError(doc, err)
	}
	b.Type, b.Port, b.VNI = rb.Type, rb.Port, rb.VNI
	for k, v := range all {
		if strings.EqualFold(k, "Type") || strings.EqualFold(k, "Port") || strings.EqualFold(k, "VNI") {
			continue
		}
		if b.Extra == nil {
			b.Extra = map[string]json.RawMessage{}
		}
		b.Extra[k] = v
	}
	return b, nil
}

// jsonError turns encoding/json's errors into messages that say where and what.
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(data, se.Offset)
		return fmt.Errorf("config: malformed JSON at line %d, column %d (byte %d): %w", line, col, se.Offset, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "top level"
		}
		line, col := lineCol(data, te.Offset)
		return fmt.Errorf("config: %s: got JSON %s, want %s (line %d, column %d)", field, te.Value, jsonKind(te.Type), line, col)
	}
	return fmt.Errorf("config: malformed JSON: %w", err)
}

// jsonKind names the JSON type a Go kind is decoded from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	goKind := t.Kind().String()
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	case "string":
		return "string"
	case "struct", "map", "ptr":
		return "object"
	case "slice", "array":
		return "array"
	case "bool":
		return "boolean"
	}
	return goKind
}

// lineCol converts a byte offset (as reported by encoding/json, pointing just
// past the offending byte) into 1-based line and column numbers.
func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	if col < 1 {
		col = 1
	}
	return line, col
}

// SetDefaults fills zero-valued fields with flannel's defaults. It needs a
// usable Network to derive the subnet defaults; with an unusable one it leaves
// those fields alone so that Validate reports the real problem.
func (c *Config) SetDefaults() {
	if c.Backend.Type == "" {
		c.Backend.Type = BackendUDP // flannel's default backend
	}
	switch c.Backend.Type {
	case BackendUDP:
		if c.Backend.Port == 0 {
			c.Backend.Port = DefaultUDPPort
		}
		// VNI means nothing to udp; flannel ignores it, and so do we.
		c.Backend.VNI = 0
	case BackendVXLAN:
		if c.Backend.Port == 0 {
			c.Backend.Port = DefaultVXLANPort
		}
		if c.Backend.VNI == 0 {
			c.Backend.VNI = DefaultVXLANVNI
		}
	case BackendHostGW:
		// host-gw routes natively: no port, no VNI.
		c.Backend.Port, c.Backend.VNI = 0, 0
	}

	if !c.Network.IsValid() || !c.Network.Addr().Is4() {
		return
	}
	bits := c.Network.Bits()
	if c.SubnetLen == 0 {
		if bits <= 22 {
			c.SubnetLen = 24
		} else {
			c.SubnetLen = bits + 2
		}
	}
	if c.SubnetLen <= bits || c.SubnetLen > 32 {
		return
	}
	size := subnetSize(c.SubnetLen)
	base := addrToU32(c.Network.Masked().Addr())
	if !c.SubnetMin.IsValid() {
		// The first subnet is skipped like flannel does: its first address
		// equals the network address, which some tools treat specially.
		c.SubnetMin = u32ToAddr(base + size)
	}
	if !c.SubnetMax.IsValid() {
		c.SubnetMax = u32ToAddr(base + networkSize(bits) - size)
	}
}

// Validate checks a complete (defaulted) config and returns the first
// violated rule as a *FieldError.
func (c *Config) Validate() error {
	n := c.Network
	switch {
	case !n.IsValid():
		return fieldErr("Network", "", "required")
	case !n.Addr().Is4():
		return fieldErr("Network", strconv.Quote(n.String()), "must be an IPv4 prefix")
	case n.Bits() > MaxNetworkBits:
		return fieldErr("Network", strconv.Quote(n.String()), "must be /%d or larger", MaxNetworkBits)
	case n.Masked() != n:
		return fieldErr("Network", strconv.Quote(n.String()), "host bits must be zero (did you mean %q?)", n.Masked().String())
	}

	sl := strconv.Itoa(c.SubnetLen)
	switch {
	case c.SubnetLen > MaxSubnetLen:
		return fieldErr("SubnetLen", sl, "must be at most %d", MaxSubnetLen)
	case c.SubnetLen <= n.Bits():
		return fieldErr("SubnetLen", sl, "must be greater than the Network prefix length %d", n.Bits())
	}

	if err := c.checkBound("SubnetMin", c.SubnetMin); err != nil {
		return err
	}
	if err := c.checkBound("SubnetMax", c.SubnetMax); err != nil {
		return err
	}
	if c.SubnetMin.Compare(c.SubnetMax) > 0 {
		return fieldErr("SubnetMin", strconv.Quote(c.SubnetMin.String()),
			"must not be above SubnetMax %q: the range must hold at least one subnet", c.SubnetMax.String())
	}

	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return fieldErr("MTU", strconv.Itoa(c.MTU), "must be 0 (derive from the interface) or %d..%d", MinMTU, MaxMTU)
	}

	b := c.Backend
	switch b.Type {
	case BackendUDP, BackendVXLAN, BackendHostGW:
	case "":
		return fieldErr("Backend.Type", "", "required")
	default:
		return fieldErr("Backend.Type", strconv.Quote(b.Type), "unknown backend (supported: udp, vxlan, host-gw)")
	}
	if b.Port != 0 && (b.Port < 1 || b.Port > 65535) {
		return fieldErr("Backend.Port", strconv.Itoa(b.Port), "must be 1..65535")
	}
	if b.Type != BackendHostGW && b.Port == 0 {
		return fieldErr("Backend.Port", "", "required for the %s backend", b.Type)
	}
	if b.VNI != 0 && (b.VNI < 1 || b.VNI > MaxVNI) {
		return fieldErr("Backend.VNI", strconv.Itoa(b.VNI), "must be 1..%d", MaxVNI)
	}
	if b.Type == BackendVXLAN && b.VNI == 0 {
		return fieldErr("Backend.VNI", "", "required for the vxlan backend")
	}
	return nil
}

func (c *Config) checkBound(field string, a netip.Addr) error {
	if !a.IsValid() {
		return fieldErr(field, "", "required")
	}
	v := strconv.Quote(a.String())
	if !a.Is4() {
		return fieldErr(field, v, "must be an IPv4 address")
	}
	if !c.Network.Contains(a) {
		return fieldErr(field, v, "must be inside Network %q", c.Network.String())
	}
	if addrToU32(a)&(subnetSize(c.SubnetLen)-1) != 0 {
		return fieldErr(field, v, "must be aligned to SubnetLen /%d", c.SubnetLen)
	}
	return nil
}

// Marshal writes the config in flannel's format. Optional fields are omitted
// when they carry no information: MTU when 0, Port when 0 (host-gw), VNI
// unless the backend is vxlan.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"Network":`)
	writeJSON(&buf, c.Network.String())
	buf.WriteString(`,"SubnetLen":`)
	buf.WriteString(strconv.Itoa(c.SubnetLen))
	if c.SubnetMin.IsValid() {
		buf.WriteString(`,"SubnetMin":`)
		writeJSON(&buf, c.SubnetMin.String())
	}
	if c.SubnetMax.IsValid() {
		buf.WriteString(`,"SubnetMax":`)
		writeJSON(&buf, c.SubnetMax.String())
	}
	if c.MTU != 0 {
		buf.WriteString(`,"MTU":`)
		buf.WriteString(strconv.Itoa(c.MTU))
	}
	buf.WriteString(`,"Backend":{"Type":`)
	writeJSON(&buf, c.Backend.Type)
	if c.Backend.Port != 0 {
		buf.WriteString(`,"Port":`)
		buf.WriteString(strconv.Itoa(c.Backend.Port))
	}
	if c.Backend.Type == BackendVXLAN && c.Backend.VNI != 0 {
		buf.WriteString(`,"VNI":`)
		buf.WriteString(strconv.Itoa(c.Backend.VNI))
	}
	keys := make([]string, 0, len(c.Backend.Extra))
	for k := range c.Backend.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic output
	for _, k := range keys {
		v := c.Backend.Extra[k]
		if !json.Valid(v) {
			return nil, fmt.Errorf("config: Backend.%s: invalid JSON value %q", k, v)
		}
		buf.WriteByte(',')
		writeJSON(&buf, k)
		buf.WriteByte(':')
		if err := json.Compact(&buf, v); err != nil {
			return nil, fmt.Errorf("config: Backend.%s: %w", k, err)
		}
	}
	buf.WriteString(`}}`)
	return buf.Bytes(), nil
}

func writeJSON(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // marshalling a string cannot fail
	buf.Write(b)
}

// SubnetCount is the number of leasable subnets in SubnetMin..SubnetMax.
func (c *Config) SubnetCount() int {
	if !c.rangeOK() {
		return 0
	}
	lo, hi := addrToU32(c.SubnetMin), addrToU32(c.SubnetMax)
	if lo > hi {
		return 0
	}
	return int((hi-lo)>>(32-c.SubnetLen)) + 1
}

// NthSubnet returns the i-th leasable subnet, counting from SubnetMin at 0. It
// returns the zero Prefix when i is outside 0..SubnetCount()-1.
func (c *Config) NthSubnet(i int) netip.Prefix {
	if i < 0 || i >= c.SubnetCount() {
		return netip.Prefix{}
	}
	a := addrToU32(c.SubnetMin) + uint32(i)<<(32-c.SubnetLen)
	return netip.PrefixFrom(u32ToAddr(a), c.SubnetLen)
}

// SubnetIndex is the inverse of NthSubnet: the index of p, and whether p is a
// leasable subnet at all.
func (c *Config) SubnetIndex(p netip.Prefix) (int, bool) {
	if !c.Contains(p) {
		return 0, false
	}
	return int((addrToU32(p.Addr()) - addrToU32(c.SubnetMin)) >> (32 - c.SubnetLen)), true
}

// Contains reports whether p is a leasable subnet: IPv4, exactly SubnetLen
// long, aligned (no host bits) and within SubnetMin..SubnetMax.
func (c *Config) Contains(p netip.Prefix) bool {
	if !c.rangeOK() || !p.IsValid() || !p.Addr().Is4() || p.Bits() != c.SubnetLen || p.Masked() != p {
		return false
	}
	return p.Addr().Compare(c.SubnetMin) >= 0 && p.Addr().Compare(c.SubnetMax) <= 0
}

// rangeOK guards the arithmetic helpers against unvalidated configs.
func (c *Config) rangeOK() bool {
	return c.SubnetLen > 0 && c.SubnetLen <= 32 && c.SubnetMin.Is4() && c.SubnetMax.Is4()
}

func subnetSize(bits int) uint32 { return uint32(1) << (32 - bits) }

// networkSize is the address count of a /bits network; /0 wraps to 0, which
// still yields the right last subnet under uint32 arithmetic.
func networkSize(bits int) uint32 { return uint32(uint64(1) << (32 - bits)) }

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u32ToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
