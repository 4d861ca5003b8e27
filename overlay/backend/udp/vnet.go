package udp

import (
	"encoding/binary"
	"errors"
)

// With IFF_VNET_HDR every read from and write to flannel0 starts with a
// struct virtio_net_hdr (<linux/virtio_net.h>, legacy layout, host byte
// order): it says whether the packet still needs its transport checksum
// (and where it goes) and, for a large segment (TSO/USO), how to cut it.

const vnetHdrLen = 10

const (
	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	gsoNone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4
	gsoECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

var errVnetShort = errors.New("shorter than the virtio-net header")

func decodeVnetHdr(b []byte) (vnetHdr, error) {
	if len(b) < vnetHdrLen {
		return vnetHdr{}, errVnetShort
	}
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:4]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:6]),
		csumStart:  binary.NativeEndian.Uint16(b[6:8]),
		csumOffset: binary.NativeEndian.Uint16(b[8:10]),
	}, nil
}

func (h vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:4], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:8], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.csumOffset)
}
