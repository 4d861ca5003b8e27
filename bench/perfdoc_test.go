package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	// An empty doc gets the header and the section.
	doc, err := ReplaceSection("", SectionControl, "## Control plane\n\nC1\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc, "# Performance\n") || !strings.Contains(doc, beginMarker(SectionControl)+"\n## Control plane\n\nC1\n\n"+endMarker(SectionControl)+"\n") {
		t.Fatalf("new doc:\n%s", doc)
	}
	// The data-plane section goes before the control section.
	doc, err = ReplaceSection(doc, SectionDataPlane, "## Data plane\n\nD1")
	if err != nil {
		t.Fatal(err)
	}
	di, ci := strings.Index(doc, beginMarker(SectionDataPlane)), strings.Index(doc, beginMarker(SectionControl))
	if di < 0 || ci < 0 || di > ci {
		t.Fatalf("data plane should precede control:\n%s", doc)
	}
	// Hand-written text outside the markers survives a replacement.
	doc = strings.Replace(doc, beginMarker(SectionControl), "A note kept by hand.\n\n"+beginMarker(SectionControl), 1)
	doc += "\nTrailing words.\n"
	doc2, err := ReplaceSection(doc, SectionDataPlane, "## Data plane\n\nD2\n")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(doc2, "D1") || !strings.Contains(doc2, "D2") || !strings.Contains(doc2, "C1") ||
		!strings.Contains(doc2, "A note kept by hand.") || !strings.HasSuffix(doc2, "Trailing words.\n") {
		t.Fatalf("replacement lost or kept the wrong text:\n%s", doc2)
	}
	// Replacing again with the same content changes nothing.
	doc3, err := ReplaceSection(doc2, SectionDataPlane, "## Data plane\n\nD2\n")
	if err != nil {
		t.Fatal(err)
	}
	if doc3 != doc2 {
		t.Fatalf("not idempotent:\n%s\n---\n%s", doc2, doc3)
	}
	doc4, err := ReplaceSection(doc3, SectionControl, "## Control plane\n\nC2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(doc4, "C1") || !strings.Contains(doc4, "C2") || !strings.Contains(doc4, "D2") {
		t.Fatalf("control replacement:\n%s", doc4)
	}
}

func TestReplaceSectionAppendsToForeignDoc(t *testing.T) {
	doc, err := ReplaceSection("# Notes\nsomething", SectionDataPlane, "x")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Notes\nsomething\n\n" + beginMarker(SectionDataPlane) + "\nx\n\n" + endMarker(SectionDataPlane) + "\n"
	if doc != want {
		t.Fatalf("got\n%q\nwant\n%q", doc, want)
	}
}

func TestReplaceSectionBrokenMarkers(t *testing.T) {
	for _, doc := range []string{
		"a\n" + beginMarker(SectionControl) + "\nno end\n",
		"a\n" + endMarker(SectionControl) + "\n" + beginMarker(SectionControl) + "\n",
		beginMarker(SectionControl) + "\n" + endMarker(SectionControl) + "\n" + beginMarker(SectionControl) + "\n" + endMarker(SectionControl) + "\n",
	} {
		if _, err := ReplaceSection(doc, SectionControl, "x"); err == nil {
			t.Errorf("broken markers accepted:\n%s", doc)
		}
	}
}

func TestUpdateDoc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "PERFORMANCE.md")
	if err := UpdateDoc(path, SectionControl, "C"); err != nil {
		t.Fatal(err)
	}
	if err := UpdateDoc(path, SectionDataPlane, "D"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if !strings.Contains(s, "\nC\n") || !strings.Contains(s, "\nD\n") || strings.Index(s, "\nD\n") > strings.Index(s, "\nC\n") {
		t.Fatalf("doc:\n%s", s)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Error("temporary file left behind")
	}
}
