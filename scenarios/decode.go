package scenarios

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Decode reads a scenario file into its raw form, reporting syntax errors,
// wrong YAML types and unknown fields. It does not check meaning; Parse does.
// On error it still returns what it could read.
func Decode(file string, data []byte) (*RawScenario, error) {
	d := newDecoder(file)
	raw := d.document(data)
	if len(d.errs) > 0 {
		return raw, d.errs.sorted()
	}
	return raw, nil
}

// decoder fills raw types from a yaml.Node tree.
type decoder struct {
	file string
	errs Errors
	// bad holds the positions of values that could not be decoded. The
	// resolver drops its own errors at those positions: they would only
	// repeat the type error in other words.
	bad map[Pos]bool
	// fatal is set when the file could not be read as YAML at all.
	fatal bool
}

func newDecoder(file string) *decoder { return &decoder{file: file, bad: map[Pos]bool{}} }

// nodeDecoder is implemented by raw types that decode themselves: the leaves,
// and the values that may be written in more than one shape.
type nodeDecoder interface {
	decodeYAML(d *decoder, n *yaml.Node, what string)
}

var posType = reflect.TypeFor[Pos]()

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Col: n.Column} }

func (d *decoder) errorf(p Pos, format string, args ...any) { d.errs.add(p, format, args...) }

// typeError reports a value of the wrong YAML type; what is the key it is the
// value of.
func (d *decoder) typeError(n *yaml.Node, what, want string) {
	p := d.pos(n)
	d.bad[p] = true
	d.errorf(p, "%s: want %s, got %s", what, want, describe(n))
}

// document parses data, which must hold exactly one YAML document with a
// mapping at its root.
func (d *decoder) document(data []byte) *RawScenario {
	raw := &RawScenario{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := safeDecode(dec, &doc); err != nil {
		d.fatal = true
		if errors.Is(err, io.EOF) {
			d.errorf(Pos{File: d.file, Line: 1, Col: 1}, "empty scenario file (want a mapping starting with apiVersion: %s)", APIVersion)
		} else {
			d.syntaxError(err)
		}
		return raw
	}
	// A trailing "---" (an empty document) is harmless; anything more is a
	// second scenario in one file, which is a mistake.
	for {
		var extra yaml.Node
		err := safeDecode(dec, &extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.fatal = true
			d.syntaxError(err)
			break
		}
		if len(extra.Content) == 1 && isNull(extra.Content[0]) && extra.Content[0].Value == "" {
			continue
		}
		d.errorf(d.pos(&extra), "a second YAML document: a scenario file holds exactly one")
		break
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		d.fatal = true
		d.errorf(Pos{File: d.file, Line: 1, Col: 1}, "empty scenario file (want a mapping starting with apiVersion: %s)", APIVersion)
		return raw
	}
	if root.Kind != yaml.MappingNode {
		d.fatal = true
	}
	d.decode(root, reflect.ValueOf(raw).Elem(), "scenario")
	return raw
}

// safeDecode guards against a panic inside the YAML library: a validator
// must answer "invalid file", whatever the bytes.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError rewrites the library's "yaml: line N: msg" into FILE:N:1. The
// library does not report a column, so the position is the start of the line.
func (d *decoder) syntaxError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if line, convErr := strconv.Atoi(m[1]); convErr == nil {
			d.errorf(Pos{File: d.file, Line: line, Col: 1}, "invalid YAML: %s", m[2])
			return
		}
	}
	d.errorf(Pos{File: d.file}, "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// decode fills v from n. A null value leaves v untouched: absent and null are
// the same thing, as in YAML generally.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind == yaml.AliasNode {
		// Following aliases by hand would let a small file expand
		// exponentially; scenario files are short enough not to need them.
		p := d.pos(n)
		d.bad[p] = true
		d.errorf(p, "%s: YAML aliases (*%s) are not supported: write the value out", what, n.Value)
		return
	}
	if isNull(n) {
		return
	}
	if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
		nd.decodeYAML(d, n, what)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), what)
	case reflect.Struct:
		d.decodeStruct(n, v, what)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.typeError(n, what, "a sequence")
			return
		}
		for _, item := range n.Content {
			if isNull(item) {
				d.typeError(item, what, "a mapping")
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(item, elem, what)
			v.Set(reflect.Append(v, elem))
		}
	default:
		// Only reachable by adding a raw field of a type this decoder does
		// not know, which the tests would catch.
		panic(fmt.Sprintf("scenarios: cannot decode into %s", v.Type()))
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// decodeStruct fills a raw struct from a mapping, matching keys to yaml tags
// exactly (keys are case-sensitive, as everywhere in YAML).
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, what string) {
	t := v.Type()
	if f, ok := t.FieldByName("Pos"); ok && f.Type == posType {
		v.FieldByIndex(f.Index).Set(reflect.ValueOf(d.pos(n)))
	}
	if n.Kind != yaml.MappingNode {
		d.typeError(n, what, "a mapping")
		return
	}
	names, index := yamlFields(t)
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(d.pos(k), "%s: a key must be a plain name, got %s", what, describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorf(d.pos(k), "%s: YAML merge keys (<<) are not supported: write the fields out", what)
			continue
		}
		name := k.Value
		if first, dup := seen[name]; dup {
			d.errorf(d.pos(k), "duplicate field %q in %s (first at line %d)", name, what, first.Line)
			continue
		}
		seen[name] = k
		fi, ok := index[name]
		if !ok {
			d.errorf(d.pos(k), "unknown field %q in %s (allowed: %s)", name, what, strings.Join(names, ", "))
			continue
		}
		d.decode(val, v.Field(fi), name)
	}
}

// yamlFields lists a raw struct's keys in declaration order and maps each to
// its field index.
func yamlFields(t reflect.Type) ([]string, map[string]int) {
	var names []string
	index := map[string]int{}
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

// describe names a node's value for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return strconv.Quote(truncate(n.Value, 40))
		}
		return truncate(n.Value, 40)
	}
	return "nothing"
}

// truncate shortens s to at most n runes for quoting in a message.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

func (s *String) decodeYAML(d *decoder, n *yaml.Node, what string) {
	s.Pos = d.pos(n)
	if n.Kind != yaml.ScalarNode {
		want := "a string"
		if what == "config" {
			// config-set's config is JSON text; unquoted JSON reads as YAML.
			want = `a string (quote the JSON: config: '{"Network": ...}')`
		}
		d.typeError(n, what, want)
		return
	}
	s.Value = n.Value
}

func (i *Int) decodeYAML(d *decoder, n *yaml.Node, what string) {
	i.Pos = d.pos(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i.Value) != nil {
		i.Value = 0
		d.typeError(n, what, "an integer")
	}
}

func (b *Bool) decodeYAML(d *decoder, n *yaml.Node, what string) {
	b.Pos = d.pos(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b.Value) != nil {
		b.Value = false
		d.typeError(n, what, "true or false")
	}
}

func (l *StringList) decodeYAML(d *decoder, n *yaml.Node, what string) {
	l.Pos = d.pos(n)
	if n.Kind != yaml.SequenceNode {
		d.typeError(n, what, "a sequence of strings")
		return
	}
	l.Values = []String{} // given, even if empty
	for _, item := range n.Content {
		if isNull(item) || item.Kind == yaml.AliasNode {
			d.typeError(item, what, "a string")
			continue
		}
		var s String
		s.decodeYAML(d, item, what)
		l.Values = append(l.Values, s)
	}
}

// backendFields and hostsFields are the plain field sets of the two-shape
// types (the same fields without the decodeYAML method), for decodeStruct.
type (
	backendFields RawBackend
	hostsFields   RawHosts
)

func (b *RawBackend) decodeYAML(d *decoder, n *yaml.Node, what string) {
	if n.Kind == yaml.ScalarNode {
		b.Pos, b.Short = d.pos(n), true
		b.Type.decodeYAML(d, n, what)
		return
	}
	if n.Kind != yaml.MappingNode {
		b.Pos = d.pos(n)
		d.typeError(n, what, "a backend type (udp, vxlan, host-gw) or a mapping {type, port, vni}")
		return
	}
	d.decodeStruct(n, reflect.ValueOf((*backendFields)(b)).Elem(), what)
}

func (h *RawHosts) decodeYAML(d *decoder, n *yaml.Node, what string) {
	switch n.Kind {
	case yaml.MappingNode:
		d.decodeStruct(n, reflect.ValueOf((*hostsFields)(h)).Elem(), what)
	case yaml.SequenceNode:
		h.Pos, h.Listed = d.pos(n), true
		h.List = []RawHost{}
		d.decode(n, reflect.ValueOf(&h.List).Elem(), what)
	default:
		h.Pos = d.pos(n)
		d.typeError(n, what, "a mapping {count, containers, ...} or a sequence with one entry per host")
	}
}

func (m *StringMap) decodeYAML(d *decoder, n *yaml.Node, what string) {
	m.Pos = d.pos(n)
	if n.Kind != yaml.MappingNode {
		d.typeError(n, what, "a mapping of names to values")
		return
	}
	m.Values = map[string]String{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.typeError(k, what, "a name")
			continue
		}
		if _, dup := m.Values[k.Value]; dup {
			d.errorf(d.pos(k), "duplicate key %q in %s", k.Value, what)
			continue
		}
		var s String
		s.decodeYAML(d, v, what+" "+k.Value)
		m.Values[k.Value] = s
	}
}

func (t *RawTenants) decodeYAML(d *decoder, n *yaml.Node, what string) {
	t.Pos = d.pos(n)
	t.List = []RawTenant{}
	if n.Kind != yaml.SequenceNode {
		d.typeError(n, what, "a sequence of {name, network, subnetLen, backend}")
		return
	}
	d.decode(n, reflect.ValueOf(&t.List).Elem(), what)
}
