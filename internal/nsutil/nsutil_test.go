package nsutil

import (
	"os"
	"path/filepath"
	"testing"
)

// skipUnlessRoot is nstest.SkipUnlessRoot, which this package cannot import
// (nstest is built on nsutil).
func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

func TestCreateDelete(t *testing.T) {
	skipUnlessRoot(t)
	const name = "ol-nstest-a"
	if Exists(name) {
		t.Skipf("%s exists already; not touching it", name)
	}
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	if !Exists(name) {
		t.Fatal("created namespace does not exist")
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Fatal("deleted namespace still exists")
	}
	if err := Delete(name); err != nil {
		t.Fatalf("deleting a missing namespace: %v", err)
	}
}

// TestDeleteHalfCreated: a process killed between creating the name's file
// and mounting the namespace on it leaves a plain file; Delete removes it.
func TestDeleteHalfCreated(t *testing.T) {
	skipUnlessRoot(t)
	const name = "ol-nstest-b"
	path := filepath.Join(RunDir, name)
	if _, err := os.Stat(path); err == nil {
		t.Skipf("%s exists already; not touching it", path)
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s left: %v", path, err)
	}
}
