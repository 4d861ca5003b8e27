package udp

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Flow steering for the parallel fast datapath (see workers.go). Every
// datagram between two hosts carries the same outer addresses and ports
// (8285 → 8285), so the kernel's SO_REUSEPORT hash, which looks at those,
// would hand every flow from one peer to the same socket. Instead a classic
// BPF program attached to the reuseport group picks the socket from the
// inner packet: the kernel runs it with the UDP payload at offset 0, which
// is the bare inner IPv4 packet (flannel's wire format), and uses its
// result as the index of the socket in the group (in bind order). So the
// same inner flow always lands on the same socket, and its worker writes it
// to its own queue of flannel0, in order.
//
// The key is the inner source and destination address and, for TCP and
// UDP packets that are not fragments, the two ports; fragments of a
// datagram share its addresses and so its worker. flowHash computes the
// same value in Go: the send side uses it to keep datagrams of different
// flows out of one UDP GSO send (a receiver steers a GSO send, and a GRO
// batch, by its first datagram).

// flowMix is the multiplier of the final mix (an odd constant with good
// avalanche for 32-bit integer hashing).
const flowMix = 0x45d9f3b

// flowHash returns the steering hash of an IPv4 packet, exactly as the
// steering program computes it before the modulo, and false for a packet
// the program cannot read (the kernel then returns 0: the first socket).
func flowHash(pkt []byte) (uint32, bool) {
	if len(pkt) < 20 {
		return 0, false
	}
	var ports uint32
	if p := pkt[9]; (p == protoTCP || p == protoUDP) && binary.BigEndian.Uint16(pkt[6:8])&0x3fff == 0 {
		ihl := int(pkt[0]&0x0f) * 4
		if ihl+4 > len(pkt) {
			return 0, false
		}
		ports = binary.BigEndian.Uint32(pkt[ihl:])
	}
	h := binary.BigEndian.Uint32(pkt[12:16]) ^ binary.BigEndian.Uint32(pkt[16:20]) ^ ports
	h ^= h >> 16
	h *= flowMix
	h ^= h >> 16
	return h, true
}

// steeringProgram is the classic BPF program that returns flowHash(payload)
// modulo n.
func steeringProgram(n int) []bpf.Instruction {
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoTCP, SkipTrue: 1},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoUDP, SkipFalse: 5},
		/* 3 */ bpf.LoadAbsolute{Off: 6, Size: 2}, // flags and fragment offset
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 3}, // a fragment: no ports
		/* 5 */ bpf.LoadMemShift{Off: 0}, // X = IHL * 4
		/* 6 */ bpf.LoadIndirect{Off: 0, Size: 4}, // both ports
		/* 7 */ bpf.Jump{Skip: 1},
		/* 8 */ bpf.LoadConstant{Dst: bpf.RegA, Val: 0},
		/* 9 */ bpf.StoreScratch{Src: bpf.RegA, N: 0},
		bpf.LoadAbsolute{Off: 12, Size: 4}, // source address
		bpf.TAX{},
		bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.TAX{},
		bpf.LoadScratch{Dst: bpf.RegA, N: 0},
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.TAX{},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: flowMix},
		bpf.TAX{},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	}
}

// attachSteering attaches the steering program for n sockets to the
// reuseport group of the socket fd.
func attachSteering(fd, n int) error {
	raw, err := bpf.Assemble(steeringProgram(n))
	if err != nil {
		return fmt.Errorf("assemble the steering program: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(unsafe.Pointer(&raw[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}
