package pcapcheck

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// WritePcap writes frames to path as a classic pcap file (Ethernet link
// type, nanosecond timestamps, snaplen SnapLen) that tcpdump and Wireshark
// read. Classic pcap has no direction field, so Frame.Outgoing is not kept.
func WritePcap(path string, frames []Frame) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write pcap %s: %w", path, cerr)
		}
	}()
	bw := bufio.NewWriter(f)
	if err := writePcap(bw, frames); err != nil {
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	return nil
}

func writePcap(w io.Writer, frames []Frame) error {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(SnapLen, layers.LinkTypeEthernet); err != nil {
		return err
	}
	for i, fr := range frames {
		data := fr.Data
		if len(data) > SnapLen {
			data = data[:SnapLen]
		}
		ci := gopacket.CaptureInfo{
			Timestamp:     fr.Time,
			CaptureLength: len(data),
			Length:        max(fr.Length, len(fr.Data)),
		}
		if err := pw.WritePacket(ci, data); err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
	}
	return nil
}

// ReadPcap reads a pcap file with Ethernet link type back into frames, for
// checking a saved capture after the fact. Outgoing is always false.
func ReadPcap(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read pcap: %w", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("read pcap %s: %w", path, err)
	}
	if lt := r.LinkType(); lt != layers.LinkTypeEthernet {
		return nil, fmt.Errorf("read pcap %s: link type %v, want Ethernet", path, lt)
	}
	var frames []Frame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("read pcap %s: frame %d: %w", path, len(frames), err)
		}
		frames = append(frames, Frame{Time: ci.Timestamp, Data: data, Length: ci.Length})
	}
}
