package sixlowpan

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// DefaultHopLimit is the hop limit AppendUDP writes when given 0; 64
// compresses to nothing (RFC 6282 §3.1.1 HLIM=10).
const DefaultHopLimit = 64

// MaxDatagram is the largest IPv6 datagram 6LoWPAN carries: the IPv6
// minimum MTU, which RFC 4944 §4 makes the link MTU.
const MaxDatagram = 1280

// UDPChecksum returns the UDP checksum of udp (UDP header and payload, with
// whatever is in the checksum field treated as zero) over the IPv6
// pseudo-header of src and dst (RFC 8200 §8.1). Zero is sent as 0xFFFF.
func UDPChecksum(src, dst netip.Addr, udp []byte) uint16 {
	s16, d16 := src.As16(), dst.As16()
	var sum uint32
	for i := 0; i < 16; i += 2 {
		sum += uint32(s16[i])<<8 | uint32(s16[i+1])
		sum += uint32(d16[i])<<8 | uint32(d16[i+1])
	}
	sum += uint32(len(udp)>>16) + uint32(len(udp)&0xffff)
	sum += protoUDP
	for i := 0; i+1 < len(udp); i += 2 {
		if i == 6 {
			continue // the checksum field itself
		}
		sum += uint32(udp[i])<<8 | uint32(udp[i+1])
	}
	if len(udp)%2 == 1 {
		sum += uint32(udp[len(udp)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// AppendUDP appends an IPv6 packet carrying one UDP datagram to b, with
// traffic class and flow label zero and a computed checksum. hopLimit 0
// means DefaultHopLimit.
func AppendUDP(b []byte, src, dst netip.AddrPort, hopLimit uint8, payload []byte) ([]byte, error) {
	if !src.Addr().Is6() || !dst.Addr().Is6() || src.Addr().Is4In6() || dst.Addr().Is4In6() {
		return b, fmt.Errorf("sixlowpan: udp: %v -> %v: %w", src, dst, ErrNotIPv6)
	}
	ul := UDPHeaderLen + len(payload)
	if IPv6HeaderLen+ul > MaxDatagram {
		return b, fmt.Errorf("sixlowpan: udp: %d octets of payload: %w", len(payload), ErrTooLarge)
	}
	if hopLimit == 0 {
		hopLimit = DefaultHopLimit
	}
	s, d := src.Addr().As16(), dst.Addr().As16()
	b = append(b, 0x60, 0, 0, 0, byte(ul>>8), byte(ul), protoUDP, hopLimit)
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	u := len(b)
	b = append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()), byte(ul>>8), byte(ul), 0, 0)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[u+6:], UDPChecksum(src.Addr(), dst.Addr(), b[u:]))
	return b, nil
}

// UDP is a parsed IPv6/UDP packet. Payload aliases the parsed packet.
type UDP struct {
	Src, Dst netip.AddrPort
	HopLimit uint8
	Payload  []byte
}

// ParseUDP parses an IPv6 packet carrying UDP directly after the IPv6
// header and verifies its lengths and checksum. Other next headers are
// ErrNotUDP; a bad checksum is ErrChecksum.
func ParseUDP(pkt []byte) (UDP, error) {
	var p UDP
	if len(pkt) < IPv6HeaderLen || pkt[0]>>4 != 6 {
		return p, fmt.Errorf("sixlowpan: udp: not IPv6: %w", ErrMalformed)
	}
	if int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt)-IPv6HeaderLen {
		return p, fmt.Errorf("sixlowpan: udp: payload length mismatch: %w", ErrMalformed)
	}
	if pkt[6] != protoUDP {
		return p, fmt.Errorf("sixlowpan: udp: next header %d: %w", pkt[6], ErrNotUDP)
	}
	u := pkt[IPv6HeaderLen:]
	if len(u) < UDPHeaderLen || int(binary.BigEndian.Uint16(u[4:])) != len(u) {
		return p, fmt.Errorf("sixlowpan: udp: length mismatch: %w", ErrMalformed)
	}
	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))
	if got, want := binary.BigEndian.Uint16(u[6:]), UDPChecksum(src, dst, u); got != want {
		return p, fmt.Errorf("sixlowpan: udp: checksum %#04x, computed %#04x: %w", got, want, ErrChecksum)
	}
	p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(u))
	p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:]))
	p.HopLimit = pkt[7]
	p.Payload = u[UDPHeaderLen:]
	return p, nil
}
