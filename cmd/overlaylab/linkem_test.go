package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/internal/linkem"
)

// linkemConfig parses args as the linkem command would and resolves them.
func linkemConfig(t *testing.T, args ...string) (linkem.Config, error) {
	t.Helper()
	var lf linkemFlags
	fs := pflag.NewFlagSet("linkem", pflag.ContinueOnError)
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return lf.config(fs)
}

func TestLinkemFlags(t *testing.T) {
	c, err := linkemConfig(t, "--host-if", "p1", "--bridge-if", "lkm0r", "--netns", "ol-x-ul", "--seed", "7",
		"--delay", "20ms", "--jitter", "5ms", "--loss", "30%", "--rate", "100mbit",
		"--direction", "out", "--match", "overlay", "--overlay-udp-port", "8472", "--etcd-ip", "192.168.77.250")
	if err != nil {
		t.Fatal(err)
	}
	want := linkem.Impairment{Match: linkem.MatchOverlay, Delay: linkem.Duration(20 * time.Millisecond), Jitter: linkem.Duration(5 * time.Millisecond), Loss: 30, Rate: 100_000_000}
	if c.Out != want || c.In != (linkem.Impairment{}) {
		t.Errorf("--direction out: out %+v, in %+v", c.Out, c.In)
	}
	if c.Seed != 7 || c.Netns != "ol-x-ul" || c.HostIf != "p1" || c.BridgeIf != "lkm0r" ||
		len(c.Overlay.UDPPorts) != 1 || c.Overlay.UDPPorts[0] != 8472 || len(c.Control.EtcdIPs) != 1 {
		t.Errorf("config %+v", c)
	}

	// A file, with flags over it.
	path := filepath.Join(t.TempDir(), "relay.json")
	if err := os.WriteFile(path, []byte(`{"hostIf":"p1","bridgeIf":"lkm0r","seed":3,"out":{"delay":"10ms"},"in":{"delay":"10ms"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = linkemConfig(t, "--config", path, "--stats-file", "/tmp/s.json", "--seed", "9")
	if err != nil {
		t.Fatal(err)
	}
	if c.Seed != 9 || c.StatsFile != "/tmp/s.json" || c.Out.Delay.Std() != 10*time.Millisecond || c.In.Delay.Std() != 10*time.Millisecond {
		t.Errorf("file + flags: %+v", c)
	}
	c, err = linkemConfig(t, "--config", path, "--direction", "in", "--loss", "5")
	if err != nil {
		t.Fatal(err)
	}
	if c.Out.Delay.Std() != 10*time.Millisecond || c.In != (linkem.Impairment{Loss: 5}) {
		t.Errorf("--direction in over a file: out %+v in %+v", c.Out, c.In)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--bridge-if", "b"}, "hostIf and bridgeIf are both required"},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--loss", "120%"}, "--loss: 120% is outside 0..100%"},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--rate", "fast"}, `--rate: "fast" is not a rate`},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--match", "etcd"}, `--match: match "etcd"`},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--direction", "up", "--delay", "1ms"}, `--direction: direction "up"`},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--reorder", "5%"}, "needs a delay"},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--match", "overlay"}, "overlay names no udpPorts"},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--overlay-network", "10.10.0.0"}, `--overlay-network "10.10.0.0"`},
		{[]string{"--host-if", "a", "--bridge-if", "b", "--overlay-udp-port", "70000"}, "--overlay-udp-port 70000"},
		{[]string{"--config", "/nonexistent/relay.json"}, "read linkem config"},
	} {
		if _, err := linkemConfig(t, bad.args...); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want one containing %q", bad.args, err, bad.want)
		}
	}
}

// The command fails, naming the interface, when it is not there.
func TestLinkemCommandMissingInterface(t *testing.T) {
	cmd := linkemCmd()
	cmd.SetArgs([]string{"--host-if", "ol-nonexistent0", "--bridge-if", "ol-nonexistent1", "--delay", "1ms"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "ol-nonexistent0") {
		t.Fatalf("error %v, want one naming ol-nonexistent0", err)
	}
}
