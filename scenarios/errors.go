package scenarios

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Pos is a position in a scenario file. Line and Col are 1-based; a zero Line
// means "somewhere in the file" (a YAML error the parser could not place).
type Pos struct {
	File      string
	Line, Col int
}

// IsValid reports whether p names a line. Raw values that were absent from
// the file have a zero Pos, so this also means "the field was given".
func (p Pos) IsValid() bool { return p.Line > 0 }

// String formats p as FILE:LINE:COLUMN, the form editors and CI logs link.
func (p Pos) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		if p.File != "" {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(max(p.Col, 1)))
	}
	return b.String()
}

func (p Pos) before(q Pos) bool {
	if p.Line != q.Line {
		return p.Line < q.Line
	}
	return p.Col < q.Col
}

// Error is one problem in a scenario file, at the position of the value (or
// key) that causes it.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string {
	if s := e.Pos.String(); s != "" {
		return s + ": " + e.Msg
	}
	return e.Msg
}

// Errors is every problem found in one file, sorted by position. Parse
// returns it (as error) whenever the file is not valid.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted orders the errors by position (stable, so several errors at one
// position keep the order they were found in) and drops exact repeats.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Pos.before(es[j].Pos) })
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && e.Pos == out[n-1].Pos && e.Msg == out[n-1].Msg {
			continue
		}
		out = append(out, e)
	}
	return out
}

func (es *Errors) add(p Pos, format string, args ...any) {
	*es = append(*es, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}
