package bench

import (
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestParseEchoReply(t *testing.T) {
	body, err := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: 0x1234, Seq: 300, Data: []byte("x")}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	ip := make([]byte, 24) // IHL 6: an options word, to check the header length is honoured
	ip[0] = 0x46
	pkt := append(ip, body...)
	if seq, ok := parseEchoReply(pkt, 0x1234); !ok || seq != 300 {
		t.Errorf("parseEchoReply = %d, %v; want 300, true", seq, ok)
	}
	if _, ok := parseEchoReply(pkt, 0x1235); ok {
		t.Error("another prober's reply accepted")
	}
	req, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x1234, Seq: 1}}).Marshal(nil)
	if _, ok := parseEchoReply(append(ip[:24:24], req...), 0x1234); ok {
		t.Error("an echo request accepted as a reply")
	}
	if _, ok := parseEchoReply(pkt[:26], 0x1234); ok {
		t.Error("a truncated packet accepted")
	}
}
