package scenarios

import (
	"strings"
	"testing"
)

// doc trims the leading newline of a raw-string YAML document, so that line
// 1 of the file is the line after the opening backquote.
func doc(s string) string { return strings.TrimPrefix(s, "\n") }

type brokenCase struct {
	name string
	yaml string
	want []string // every error, in order, as printed
}

var brokenCases = []brokenCase{
	{
		name: "unknown top-level field",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hostz: 3
`),
		want: []string{`s.yaml:3:1: unknown field "hostz" in scenario (allowed: apiVersion, name, lab, seed, description, network, underlay, etcd, hosts, timeline, expect, artifacts)`},
	},
	{
		name: "unknown nested field",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  netwrk: 10.10.0.0/16
`),
		want: []string{`s.yaml:4:3: unknown field "netwrk" in network (allowed: network, subnetLen, backend)`},
	},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range brokenCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("s.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want errors:\n%s", s, strings.Join(tc.want, "\n"))
			}
			if s != nil {
				t.Errorf("Parse returned a scenario along with errors")
			}
			es, ok := err.(Errors)
			if !ok {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			got := strings.Split(es.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n  got:  %s\n  want: %s", strings.Join(got, "\n        "), strings.Join(tc.want, "\n        "))
			}
		})
	}
}
