package cni

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types/create"
)

func TestFlannelJSON(t *testing.T) {
	conf := FlannelConf{SubnetFile: "/run/lab/h1/subnet.env"}.withDefaults()
	if err := conf.validate(); err != nil {
		t.Fatal(err)
	}
	b, err := conf.flannelJSON("/tmp/lab/h1/cni")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "/var/lib/cni") {
		t.Fatalf("conf points at /var/lib/cni: %s", b)
	}
	var got struct {
		CNIVersion string         `json:"cniVersion"`
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		SubnetFile string         `json:"subnetFile"`
		DataDir    string         `json:"dataDir"`
		IPAM       map[string]any `json:"ipam"`
		Delegate   map[string]any `json:"delegate"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	want := map[string][2]string{
		"cniVersion":   {got.CNIVersion, confVersion},
		"name":         {got.Name, DefaultNetwork},
		"type":         {got.Type, "flannel"},
		"subnetFile":   {got.SubnetFile, "/run/lab/h1/subnet.env"},
		"dataDir":      {got.DataDir, "/tmp/lab/h1/cni/flannel"},
		"ipam.type":    {str(got.IPAM["type"]), "host-local"},
		"ipam.dataDir": {str(got.IPAM["dataDir"]), "/tmp/lab/h1/cni/networks"},
		"bridge":       {str(got.Delegate["bridge"]), DefaultBridge},
	}
	for k, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %q, want %q", k, v[0], v[1])
		}
	}
	// The v0.9.1 flannel plugin refuses a delegate with its own ipam, name,
	// or a non-string type; and MTU/ipMasq must come from subnet.env.
	for _, k := range []string{"ipam", "name", "type", "mtu", "ipMasq"} {
		if _, ok := got.Delegate[k]; ok {
			t.Errorf("delegate carries %q: %s", k, b)
		}
	}
}

func str(v any) string { s, _ := v.(string); return s }

func TestPrepareRejectsBadInput(t *testing.T) {
	r := &Runner{PluginDir: "/opt/cni", DataDir: "/tmp/cni"}
	good := FlannelConf{SubnetFile: "/run/subnet.env"}
	cases := []struct {
		name                string
		r                   *Runner
		host, ctr, id, ifNm string
		conf                FlannelConf
		want                string
	}{
		{"relative subnet file", r, "/h", "/c", "id1", "eth0", FlannelConf{SubnetFile: "subnet.env"}, `subnet file "subnet.env"`},
		{"bad network name", r, "/h", "/c", "id1", "eth0", FlannelConf{SubnetFile: "/s", Network: "a/b"}, `network name "a/b"`},
		{"long bridge name", r, "/h", "/c", "id1", "eth0", FlannelConf{SubnetFile: "/s", Bridge: "bridge-name-too-long"}, `bridge name "bridge-name-too-long"`},
		{"empty container ID", r, "/h", "/c", "", "eth0", good, `container ID ""`},
		{"container ID with slash", r, "/h", "/c", "../x", "eth0", good, `container ID "../x"`},
		{"long interface name", r, "/h", "/c", "id1", "eth0123456789abcdef", good, `interface name "eth0123456789abcdef"`},
		{"relative host netns", r, "ol-x-h1", "/c", "id1", "eth0", good, `host netns "ol-x-h1"`},
		{"relative container netns", r, "/h", "c1", "id1", "eth0", good, `container netns "c1"`},
		{"no data dir", &Runner{PluginDir: "/opt/cni"}, "/h", "/c", "id1", "eth0", good, "DataDir"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.r.prepare(c.host, c.ctr, c.id, c.ifNm, c.conf)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %s", err, c.want)
			}
		})
	}
	if _, err := r.prepare("/h", "/c", "id1", "eth0", good); err != nil {
		t.Fatalf("good input rejected: %v", err)
	}
}

func TestCheckPlugins(t *testing.T) {
	dir := t.TempDir()
	r := &Runner{PluginDir: dir, DataDir: t.TempDir()}
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("flannel", 0o755)
	write("bridge", 0o644) // not executable: as good as missing
	err := r.CheckPlugins()
	if err == nil || !strings.Contains(err.Error(), "[bridge host-local loopback]") ||
		!strings.Contains(err.Error(), "make cni-plugins") {
		t.Fatalf("got %v, want the three missing plugins and the make target", err)
	}
	write("bridge", 0o755)
	write("host-local", 0o755)
	write("loopback", 0o755)
	if err := os.Chmod(filepath.Join(dir, "bridge"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckPlugins(); err != nil {
		t.Fatal(err)
	}
}

// A result as the bridge plugin prints it for a 0.3.1 config (relayed as is
// by the flannel plugin).
const bridgeResult = `{
  "cniVersion": "0.3.1",
  "interfaces": [
    {"name": "cni0", "mac": "aa:aa:aa:aa:aa:01"},
    {"name": "veth1234abcd", "mac": "aa:aa:aa:aa:aa:02"},
    {"name": "eth0", "mac": "aa:aa:aa:aa:aa:03", "sandbox": "/var/run/netns/ol-x-h1-c1"}
  ],
  "ips": [{"version": "4", "interface": 2, "address": "10.10.7.2/24", "gateway": "10.10.7.1"}],
  "routes": [{"dst": "10.10.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.10.7.1"}],
  "dns": {}
}`

func TestParseResult(t *testing.T) {
	raw, err := create.Create("0.3.1", []byte(bridgeResult))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseResult(raw, "cni0")
	if err != nil {
		t.Fatal(err)
	}
	want := Result{
		Address: netip.MustParsePrefix("10.10.7.2/24"), Gateway: netip.MustParseAddr("10.10.7.1"),
		ContainerIf: "eth0", MAC: "aa:aa:aa:aa:aa:03", Bridge: "cni0", HostVeth: "veth1234abcd",
	}
	if *got != want {
		t.Fatalf("got %+v\nwant %+v", *got, want)
	}

	// An address on a host interface only is no container address.
	noCtr := strings.Replace(bridgeResult, `"interface": 2`, `"interface": 0`, 1)
	raw, err = create.Create("0.3.1", []byte(noCtr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseResult(raw, "cni0"); err == nil || !strings.Contains(err.Error(), "no container interface") {
		t.Fatalf("got %v, want an error about the missing container address", err)
	}
}
