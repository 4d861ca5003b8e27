package scenarios

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, must be
// deterministic, and must either succeed or return sorted Errors that all
// carry a position (only a YAML error the library could not place may lack a
// line).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, tc := range brokenCases {
		f.Add([]byte(tc.yaml))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("f.yaml", data)
		if err == nil {
			if s == nil {
				t.Fatal("nil scenario without an error")
			}
			return
		}
		if s != nil {
			t.Fatal("a scenario along with errors")
		}
		es, ok := err.(Errors)
		if !ok || len(es) == 0 {
			t.Fatalf("error %T %v: want non-empty Errors", err, err)
		}
		if !sort.SliceIsSorted(es, func(i, j int) bool { return es[i].Pos.before(es[j].Pos) }) {
			t.Fatalf("errors not sorted:\n%v", es)
		}
		for _, e := range es {
			if e.Pos.File != "f.yaml" || (e.Pos.Line < 1 && !strings.HasPrefix(e.Msg, "invalid YAML")) {
				t.Fatalf("error without a position: %#v", e)
			}
		}
		if _, err2 := Parse("f.yaml", data); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("not deterministic:\n%v\n---\n%v", err, err2)
		}
	})
}
