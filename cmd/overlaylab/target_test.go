package main

import (
	"strings"
	"testing"

	"github.com/overlaylab/overlaylab/lab"
)

func testState() *lab.State {
	return &lab.State{
		Name:     "t",
		Etcd:     lab.EtcdState{Netns: "ol-t-etcd"},
		Underlay: lab.UnderlayState{Netns: "ol-t-ul"},
		Hosts: []lab.HostState{{
			Name:  "h1",
			Netns: "ol-t-h1",
			Containers: []lab.ContainerState{
				{Name: "c1", Netns: "ol-t-h1-c1"},
				{Name: "c2", Netns: "ol-t-h1-c2"},
			},
		}},
	}
}

func TestResolveTarget(t *testing.T) {
	st := testState()
	for target, want := range map[string]string{
		"h1":       "ol-t-h1",
		"h1/c1":    "ol-t-h1-c1",
		"h1/c2":    "ol-t-h1-c2",
		"etcd":     "ol-t-etcd",
		"underlay": "ol-t-ul",
	} {
		got, err := resolveTarget(st, target)
		if err != nil || got != want {
			t.Errorf("resolveTarget(%q) = %q, %v; want %q", target, got, err, want)
		}
	}
}

func TestResolveTargetErrors(t *testing.T) {
	st := testState()
	for _, tc := range []struct {
		target string
		wants  []string // each must appear in the error
	}{
		// An unknown host: the error names it, the lab, and what exists.
		{"h9", []string{`"h9"`, `"t"`, "h1", "etcd", "underlay"}},
		{"h9/c1", []string{`"h9"`, "h1"}},
		{"", []string{"h1", "etcd", "underlay"}},
		// An unknown container names the host and the container asked for.
		{"h1/c9", []string{"h1", `"c9"`}},
		{"h1/", []string{"h1"}},
		// etcd and underlay have no containers.
		{"etcd/c1", []string{"etcd/c1"}},
	} {
		got, err := resolveTarget(st, tc.target)
		if err == nil {
			t.Errorf("resolveTarget(%q) = %q, want an error", tc.target, got)
			continue
		}
		for _, w := range tc.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("resolveTarget(%q) error %q does not mention %s", tc.target, err, w)
			}
		}
	}
}
