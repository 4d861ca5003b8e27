package lab

import (
	"fmt"
	"strings"
)

// The one expected-vs-actual judgement of connectivity: what a probe
// counted, per pair, against what was wanted.

// WantKind is what a connectivity check expects of every selected pair.
type WantKind string

// Wants.
const (
	WantAll  WantKind = "all"  // every probe answered (with UntilAnswered: every pair answered once)
	WantNone WantKind = "none" // no probe answered
	WantLoss WantKind = "loss" // at most MaxLoss percent of all probes lost
)

// Want is a check's expectation.
type Want struct {
	Kind    WantKind
	MaxLoss float64 // percent, for WantLoss
	// Once judges WantAll by "answered at least once" (a probe run with
	// UntilAnswered), not by "every probe answered".
	Once bool
}

func (w Want) String() string {
	if w.Kind == WantLoss {
		return fmt.Sprintf("loss<=%g%%", w.MaxLoss)
	}
	return string(w.Kind)
}

// Cell is one ordered pair of a matrix.
type Cell struct {
	Probed   bool `json:"probed"`
	Sent     int  `json:"sent"`
	Received int  `json:"received"`
	Bad      bool `json:"bad"` // breaks the expectation
}

// Matrix is a judged connectivity check: rows are sources, columns targets.
type Matrix struct {
	Endpoints []string `json:"endpoints"`
	Want      Want     `json:"want"`
	Cells     [][]Cell `json:"cells"`
	// Sent and Received are the totals over probed pairs.
	Sent, Received int
}

// Judge applies want to what a probe counted over the pairs pair selects.
func Judge(eps []Endpoint, pair func(i, j int) bool, c *Counts, want Want) *Matrix {
	n := len(eps)
	m := &Matrix{Want: want, Cells: make([][]Cell, n)}
	for _, e := range eps {
		m.Endpoints = append(m.Endpoints, e.Name)
	}
	for i := range n {
		m.Cells[i] = make([]Cell, n)
		for j := range n {
			if i == j || eps[i].Netns == "" || !pair(i, j) {
				continue
			}
			x := Cell{Probed: true}
			if c != nil {
				x.Sent, x.Received = c.Sent[i][j], c.Received[i][j]
			}
			switch want.Kind {
			case WantAll:
				x.Bad = x.Sent == 0 || x.Received < x.Sent
				if want.Once {
					x.Bad = x.Received == 0
				}
			case WantNone:
				x.Bad = x.Received > 0
			case WantLoss:
				x.Bad = lossPercent(x.Sent, x.Received) > want.MaxLoss
			}
			m.Sent += x.Sent
			m.Received += x.Received
			m.Cells[i][j] = x
		}
	}
	return m
}

func lossPercent(sent, recv int) float64 {
	if sent == 0 {
		return 100
	}
	return 100 * float64(sent-recv) / float64(sent)
}

// Pairs counts the probed pairs.
func (m *Matrix) Pairs() int {
	n := 0
	for _, row := range m.Cells {
		for _, x := range row {
			if x.Probed {
				n++
			}
		}
	}
	return n
}

// Failures counts the probed pairs that break the expectation.
func (m *Matrix) Failures() int {
	n := 0
	for _, row := range m.Cells {
		for _, x := range row {
			if x.Probed && x.Bad {
				n++
			}
		}
	}
	return n
}

// OK reports whether the check passed: for all and none every pair, for
// loss the total over all pairs (a loss budget is shared).
func (m *Matrix) OK() bool {
	if m.Sent == 0 {
		return false // nothing was probed: nothing was shown
	}
	if m.Want.Kind == WantLoss {
		return lossPercent(m.Sent, m.Received) <= m.Want.MaxLoss
	}
	return m.Failures() == 0
}

// Summary is the check in one line.
func (m *Matrix) Summary() string {
	return fmt.Sprintf("want %s: %d pairs, %d/%d probes answered (%.1f%% loss), %d pairs wrong",
		m.Want, m.Pairs(), m.Received, m.Sent, lossPercent(m.Sent, m.Received), m.Failures())
}

// maxDrawn is the largest matrix drawn as a grid; beyond it only the wrong
// pairs are listed.
const maxDrawn = 24

// String draws the matrix: replies/probes per cell, "!" marking a cell that
// breaks the expectation; a large one lists only its wrong pairs.
func (m *Matrix) String() string {
	var b strings.Builder
	if len(m.Endpoints) > maxDrawn {
		fmt.Fprintf(&b, "%d endpoints, %d pairs probed, want %s; wrong pairs:\n", len(m.Endpoints), m.Pairs(), m.Want)
		shown := 0
		for i, src := range m.Endpoints {
			for j, dst := range m.Endpoints {
				if x := m.Cells[i][j]; x.Probed && x.Bad {
					if shown++; shown <= 50 {
						fmt.Fprintf(&b, "  %s -> %s: %d/%d answered\n", src, dst, x.Received, x.Sent)
					}
				}
			}
		}
		if shown > 50 {
			fmt.Fprintf(&b, "  ... and %d more\n", shown-50)
		}
		return b.String()
	}
	w := 8
	for _, e := range m.Endpoints {
		w = max(w, len(e)+1)
	}
	fmt.Fprintf(&b, "%-*s", w, "from\\to")
	for _, e := range m.Endpoints {
		fmt.Fprintf(&b, " %-*s", w, e)
	}
	b.WriteString("\n")
	for i, e := range m.Endpoints {
		fmt.Fprintf(&b, "%-*s", w, e)
		for j := range m.Endpoints {
			cell := ""
			if x := m.Cells[i][j]; x.Probed {
				cell = fmt.Sprintf("%d/%d", x.Received, x.Sent)
				if x.Bad {
					cell += "!"
				}
			}
			fmt.Fprintf(&b, " %-*s", w, cell)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "cells: replies/probes, want %s; ! breaks the expectation\n", m.Want)
	return b.String()
}
