package nstest

import (
	"strings"
	"testing"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

func TestNameUniqueAndPrefixed(t *testing.T) {
	a, b := Name("x"), Name("x")
	if a == b {
		t.Fatalf("two calls gave the same name %q", a)
	}
	if !strings.HasPrefix(a, "ol-t") || !strings.Contains(a, "-x-") {
		t.Fatalf("name %q lacks the project prefix or the tag", a)
	}
}

// TestNetnsRemovedAtCleanup: the namespace exists, has lo up, and is gone
// once the (sub)test that made it ends.
func TestNetnsRemovedAtCleanup(t *testing.T) {
	SkipUnlessRoot(t, "creates network namespaces")
	var name string
	t.Run("make", func(t *testing.T) {
		name = Netns(t, "self")
		if !nsutil.Exists(name) {
			t.Fatalf("%s does not exist", name)
		}
		lo, err := Handle(t, name).LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		if lo.Attrs().OperState.String() == "down" {
			t.Fatalf("lo in %s is down", name)
		}
	})
	if name == "" {
		t.Fatal("subtest made no namespace")
	}
	if nsutil.Exists(name) {
		t.Fatalf("%s survived its test", name)
	}
}
