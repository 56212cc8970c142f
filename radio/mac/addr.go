package mac

import (
	"encoding/binary"
	"fmt"
)

// AddrMode is the addressing mode of a frame control field (IEEE
// 802.15.4-2006 §7.2.1.1.6): how long an address is on air.
type AddrMode uint8

// Addressing modes. Mode 1 is reserved in 802.15.4-2006.
const (
	AddrNone     AddrMode = 0 // no address (and no PAN ID) present
	AddrShort    AddrMode = 2 // 16-bit short address
	AddrExtended AddrMode = 3 // 64-bit extended address (EUI-64)
)

// Well-known short addresses (IEEE 802.15.4-2006 §7.2.1.1.6 and §7.1.3.1).
const (
	BroadcastShort uint16 = 0xFFFF // broadcast short address and broadcast PAN ID
	NoShort        uint16 = 0xFFFE // "associated but has no short address": use the extended one
)

// Addr is an IEEE 802.15.4 MAC address: none, short or extended. The zero
// value is "no address".
//
// An extended address is held as the EUI-64 in big-endian (canonical) order,
// the way it is printed on labels and in RFC 4291 Appendix A: byte 0 carries
// the universal/local and group bits. On air the standard sends every
// multi-octet field low octet first, so the encoder writes the eight octets
// reversed and the decoder reverses them back; nothing else sees the wire
// order.
type Addr struct {
	mode  AddrMode
	short uint16
	ext   [8]byte
}

// Broadcast is the broadcast short address 0xFFFF.
var Broadcast = ShortAddr(BroadcastShort)

// ShortAddr returns a short address.
func ShortAddr(a uint16) Addr { return Addr{mode: AddrShort, short: a} }

// ExtendedAddr returns an extended address from an EUI-64 in big-endian
// (canonical) order.
func ExtendedAddr(eui64 [8]byte) Addr { return Addr{mode: AddrExtended, ext: eui64} }

// ExtendedAddrUint64 returns an extended address from the EUI-64 as a
// number, most significant octet first (0x0011223344556677 is
// 00:11:22:33:44:55:66:77).
func ExtendedAddrUint64(v uint64) Addr {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], v)
	return ExtendedAddr(e)
}

// Mode returns the addressing mode: AddrNone, AddrShort or AddrExtended.
func (a Addr) Mode() AddrMode { return a.mode }

// IsValid reports whether a is a short or extended address.
func (a Addr) IsValid() bool { return a.mode == AddrShort || a.mode == AddrExtended }

// IsBroadcast reports whether a is the short broadcast address 0xFFFF.
func (a Addr) IsBroadcast() bool { return a.mode == AddrShort && a.short == BroadcastShort }

// Short returns the short address; ok is false if a is not short.
func (a Addr) Short() (v uint16, ok bool) { return a.short, a.mode == AddrShort }

// Extended returns the EUI-64 in big-endian order; ok is false if a is not
// extended.
func (a Addr) Extended() (eui64 [8]byte, ok bool) { return a.ext, a.mode == AddrExtended }

// Len returns the number of octets the address takes on air: 0, 2 or 8.
func (a Addr) Len() int { return a.mode.Len() }

// Len returns the number of octets an address in mode m takes on air.
func (m AddrMode) Len() int {
	switch m {
	case AddrShort:
		return 2
	case AddrExtended:
		return 8
	}
	return 0
}

// IID returns the IPv6 interface identifier derived from a (RFC 6282
// §3.2.2; RFC 4944 §6): the EUI-64 with the universal/local bit inverted,
// or 0000:00ff:fe00:XXXX for a short address. ok is false for no address.
func (a Addr) IID() (iid [8]byte, ok bool) {
	switch a.mode {
	case AddrExtended:
		iid = a.ext
		iid[0] ^= 0x02
		return iid, true
	case AddrShort:
		iid = [8]byte{0, 0, 0, 0xff, 0xfe, 0, byte(a.short >> 8), byte(a.short)}
		return iid, true
	}
	return iid, false
}

// AddrFromIID is the inverse of IID: an IID of the form 0000:00ff:fe00:XXXX
// gives short address XXXX, any other IID the extended address whose
// universal/local bit is the IID's inverted.
func AddrFromIID(iid [8]byte) Addr {
	if iid[0] == 0 && iid[1] == 0 && iid[2] == 0 && iid[3] == 0xff && iid[4] == 0xfe && iid[5] == 0 {
		return ShortAddr(uint16(iid[6])<<8 | uint16(iid[7]))
	}
	iid[0] ^= 0x02
	return ExtendedAddr(iid)
}

// String formats a short address as "0x1234" and an extended one as
// "00:11:22:33:44:55:66:77" (big-endian); no address is "none".
func (a Addr) String() string {
	switch a.mode {
	case AddrShort:
		return fmt.Sprintf("0x%04x", a.short)
	case AddrExtended:
		e := a.ext
		return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x:%02x:%02x", e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7])
	}
	return "none"
}

// putAddr writes a in wire order (low octet first) and returns the octets
// written.
func putAddr(b []byte, a Addr) int {
	switch a.mode {
	case AddrShort:
		binary.LittleEndian.PutUint16(b, a.short)
		return 2
	case AddrExtended:
		for i := range 8 {
			b[i] = a.ext[7-i]
		}
		return 8
	}
	return 0
}

// readAddr reads an address in mode m from wire order; the caller has
// checked the length.
func readAddr(b []byte, m AddrMode) Addr {
	switch m {
	case AddrShort:
		return ShortAddr(binary.LittleEndian.Uint16(b))
	case AddrExtended:
		var e [8]byte
		for i := range 8 {
			e[i] = b[7-i]
		}
		return ExtendedAddr(e)
	}
	return Addr{}
}
