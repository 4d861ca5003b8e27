package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Doc sections, in the order they appear in docs/PERFORMANCE.md.
const (
	SectionDataPlane = "dataplane"
	SectionControl   = "control"
)

var sectionOrder = []string{SectionDataPlane, SectionControl, SectionScale}

func beginMarker(name string) string { return "<!-- overlaylab-bench:begin " + name + " -->" }
func endMarker(name string) string   { return "<!-- overlaylab-bench:end " + name + " -->" }

// docHeader opens a new docs/PERFORMANCE.md.
const docHeader = `# Performance

This file is generated: ` + "`make bench`" + ` runs ` + "`overlaylab bench`" + `, which rewrites the data-plane section, and
` + "`overlaylab bench control --agents 1000`" + `, which rewrites the control-plane section; ` + "`make bench-scale`" + ` runs
` + "`overlaylab bench scale`" + `, which rewrites the lab-scale section. Each command replaces only its own section
(between the markers), so the others survive a run of any. Every figure below comes from the measured run
named in its section; do not edit them by hand.

`

// ReplaceSection returns doc with the named section's content replaced by
// body. A missing section is inserted before the first section that
// follows it in the standard order, or appended; an empty doc gets the
// header first. Text outside the markers is kept as it is.
func ReplaceSection(doc, name, body string) (string, error) {
	begin, end := beginMarker(name), endMarker(name)
	block := begin + "\n" + strings.TrimRight(body, "\n") + "\n\n" + end + "\n"
	if strings.TrimSpace(doc) == "" {
		return docHeader + block, nil
	}
	bi := strings.Index(doc, begin)
	ei := strings.Index(doc, end)
	switch {
	case bi >= 0 && ei > bi:
		if strings.Count(doc, begin) > 1 || strings.Count(doc, end) > 1 {
			return "", fmt.Errorf("section %q appears more than once", name)
		}
		tail := doc[ei+len(end):]
		tail = strings.TrimPrefix(tail, "\n")
		return doc[:bi] + block + tail, nil
	case bi >= 0 || ei >= 0:
		return "", fmt.Errorf("section %q: begin and end markers do not match; fix or delete the file", name)
	}
	// Insert before the first later section present, else append.
	later := false
	for _, s := range sectionOrder {
		if s == name {
			later = true
			continue
		}
		if !later {
			continue
		}
		if i := strings.Index(doc, beginMarker(s)); i >= 0 {
			return doc[:i] + block + "\n" + doc[i:], nil
		}
	}
	if !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	if !strings.HasSuffix(doc, "\n\n") {
		doc += "\n"
	}
	return doc + block, nil
}

// UpdateDoc replaces one section of the doc at path (created, with its
// directory, when missing), writing atomically.
func UpdateDoc(path, name, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc, err := ReplaceSection(string(old), name, body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
