package pcapcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

func TestWritePcapRoundTrip(t *testing.T) {
	big := make([]byte, SnapLen) // a GSO-sized frame: kept whole
	copy(big, plainEcho(t, ctrA, ctrB))
	in := frames(
		flannelUDP(t, host1, host2, ctrA, ctrB, DefaultUDPPort),
		flannelVXLAN(t, host1, host2, ctrA, ctrB, DefaultVXLANPort, 1),
		plainEcho(t, ctrA, ctrB),
		big,
	)
	in[3].Length = SnapLen + 5000 // as if cut at SnapLen by the capture

	path := filepath.Join(t.TempDir(), "x.pcap")
	if err := WritePcap(path, in); err != nil {
		t.Fatal(err)
	}

	// Read back with pcapgo directly: that is what other tools see.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != SnapLen {
		t.Errorf("link type %v snaplen %d", r.LinkType(), r.Snaplen())
	}
	for i, want := range in {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(data, want.Data) {
			t.Errorf("frame %d: data differs (%d vs %d bytes)", i, len(data), len(want.Data))
		}
		if !ci.Timestamp.Equal(want.Time) {
			t.Errorf("frame %d: time %v, want %v", i, ci.Timestamp, want.Time)
		}
		if ci.Length != want.Length || ci.CaptureLength != len(want.Data) {
			t.Errorf("frame %d: length %d/%d, want %d/%d", i, ci.CaptureLength, ci.Length, len(want.Data), want.Length)
		}
	}
	if _, _, err := r.ReadPacketData(); err == nil {
		t.Error("extra frame in file")
	}

	// And through ReadPcap, decoding the same as the originals.
	back, err := ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(in) {
		t.Fatalf("ReadPcap: %d frames, want %d", len(back), len(in))
	}
	d1, d2 := Decode(in, encVXLAN), Decode(back, encVXLAN)
	if len(d1) != len(d2) {
		t.Fatalf("decoded %d vs %d", len(d1), len(d2))
	}
	for i := range d1 {
		d1[i].Outgoing = false // pcap has no direction
		if d1[i].String() != d2[i].String() {
			t.Errorf("decoded differently:\n%v\n%v", d1[i], d2[i])
		}
	}
}

func TestWritePcapEmptyAndBadPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.pcap")
	if err := WritePcap(path, nil); err != nil {
		t.Fatal(err)
	}
	back, err := ReadPcap(path)
	if err != nil || len(back) != 0 {
		t.Errorf("empty round trip: %v, %d frames", err, len(back))
	}
	if err := WritePcap(filepath.Join(t.TempDir(), "no", "such", "dir.pcap"), nil); err == nil {
		t.Error("WritePcap into a missing directory succeeded")
	}
}
