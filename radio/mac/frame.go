// Package mac encodes and decodes IEEE 802.15.4-2006 MAC frames: the frame
// control field, sequence number, PAN IDs, short and extended addresses with
// PAN ID compression, and the FCS (CRC-16, see FCS).
//
// The codec is buffer-first. Decode returns a Frame whose Payload aliases
// the input; AppendEncode and MarshalTo write into the caller's buffer. Data
// and acknowledgment frames are what the gateway sends; beacon and MAC
// command frames decode too, with their bodies left as raw Payload. Frames
// with security enabled, and 802.15.4-2015 (version 2) frames, are reported
// with ErrUnsupported rather than guessed at.
//
// Sizes: a PSDU is at most MaxPSDU (127) octets including the 2-octet FCS,
// so an MPDU handed to a radio.Link, which carries no FCS, is at most
// MaxMPDU (125).
package mac

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Size limits (IEEE 802.15.4-2006 §6.4.1 aMaxPHYPacketSize).
const (
	MaxPSDU = 127              // PHY payload: MAC header, payload and FCS
	MaxMPDU = MaxPSDU - FCSLen // MAC header and payload, as radio.Link carries it
)

// Errors callers branch on; decode errors wrap them with detail.
var (
	ErrTruncated   = errors.New("mac: frame truncated")
	ErrMalformed   = errors.New("mac: malformed frame")
	ErrUnsupported = errors.New("mac: unsupported frame")
	ErrTooLong     = errors.New("mac: frame too long")
)

// FrameType is the frame type subfield (§7.2.1.1.1).
type FrameType uint8

// Frame types.
const (
	TypeBeacon  FrameType = 0
	TypeData    FrameType = 1
	TypeAck     FrameType = 2
	TypeCommand FrameType = 3
)

func (t FrameType) String() string {
	switch t {
	case TypeBeacon:
		return "beacon"
	case TypeData:
		return "data"
	case TypeAck:
		return "ack"
	case TypeCommand:
		return "command"
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// Frame versions (§7.2.1.1.7).
const (
	Version2003 uint8 = 0
	Version2006 uint8 = 1
)

// Frame control bits (§7.2.1.1, Figure 35), as a little-endian uint16.
const (
	fcType        = 0x0007
	fcSecurity    = 0x0008
	fcPending     = 0x0010
	fcAckRequest  = 0x0020
	fcPANIDComp   = 0x0040
	fcDstModeShft = 10
	fcVersionShft = 12
	fcSrcModeShft = 14
)

// Frame is one MAC frame without its FCS.
//
// PAN IDs: DstPAN is present on air when Dst is; SrcPAN when Src is and
// PANIDCompression is false. With PANIDCompression (both addresses present,
// intra-PAN) the source PAN is elided and Decode sets SrcPAN = DstPAN.
type Frame struct {
	Type             FrameType
	Security         bool // never set by Decode: secured frames are ErrUnsupported
	FramePending     bool
	AckRequest       bool
	PANIDCompression bool
	Version          uint8 // Version2003 or Version2006
	Seq              uint8
	DstPAN           uint16
	Dst              Addr
	SrcPAN           uint16
	Src              Addr
	Payload          []byte // MAC payload; after Decode it aliases the decoded buffer
}

// HeaderLen returns the MAC header length, without FCS, of a frame with the
// given addressing: frame control, sequence number, PAN IDs and addresses.
func HeaderLen(dst, src AddrMode, panIDCompression bool) int {
	n := 3 + dst.Len() + src.Len()
	if dst != AddrNone {
		n += 2
	}
	if src != AddrNone && !panIDCompression {
		n += 2
	}
	return n
}

// HeaderLen returns the length of f's MAC header.
func (f *Frame) HeaderLen() int {
	return HeaderLen(f.Dst.mode, f.Src.mode, f.PANIDCompression)
}

// Len returns the MPDU length of f without FCS.
func (f *Frame) Len() int { return f.HeaderLen() + len(f.Payload) }

// MaxPayload returns the largest MAC payload a frame with this addressing
// can carry in MaxMPDU octets.
func MaxPayload(dst, src AddrMode, panIDCompression bool) int {
	return MaxMPDU - HeaderLen(dst, src, panIDCompression)
}

func (f *Frame) check() error {
	if f.Type > TypeCommand {
		return fmt.Errorf("mac: encode: frame type %d: %w", f.Type, ErrUnsupported)
	}
	if f.Security {
		return fmt.Errorf("mac: encode: security header: %w", ErrUnsupported)
	}
	if f.Version > Version2006 {
		return fmt.Errorf("mac: encode: frame version %d: %w", f.Version, ErrUnsupported)
	}
	if f.PANIDCompression && (!f.Dst.IsValid() || !f.Src.IsValid()) {
		return fmt.Errorf("mac: encode: PAN ID compression needs both addresses: %w", ErrMalformed)
	}
	if f.Dst.mode != AddrNone && !f.Dst.IsValid() || f.Src.mode != AddrNone && !f.Src.IsValid() {
		return fmt.Errorf("mac: encode: address mode: %w", ErrMalformed)
	}
	if n := f.Len(); n > MaxMPDU {
		return fmt.Errorf("mac: encode: %d octets: %w", n, ErrTooLong)
	}
	return nil
}

// MarshalTo writes f into b, which must hold f.Len() octets, and returns
// the number written. No FCS is added (see AppendFCS).
func (f *Frame) MarshalTo(b []byte) (int, error) {
	if err := f.check(); err != nil {
		return 0, err
	}
	n := f.Len()
	if len(b) < n {
		return 0, fmt.Errorf("mac: encode: buffer of %d octets for %d: %w", len(b), n, ErrTooLong)
	}
	fc := uint16(f.Type) | uint16(f.Dst.mode)<<fcDstModeShft | uint16(f.Version)<<fcVersionShft | uint16(f.Src.mode)<<fcSrcModeShft
	if f.FramePending {
		fc |= fcPending
	}
	if f.AckRequest {
		fc |= fcAckRequest
	}
	if f.PANIDCompression {
		fc |= fcPANIDComp
	}
	binary.LittleEndian.PutUint16(b, fc)
	b[2] = f.Seq
	off := 3
	if f.Dst.mode != AddrNone {
		binary.LittleEndian.PutUint16(b[off:], f.DstPAN)
		off += 2
		off += putAddr(b[off:], f.Dst)
	}
	if f.Src.mode != AddrNone {
		if !f.PANIDCompression {
			binary.LittleEndian.PutUint16(b[off:], f.SrcPAN)
			off += 2
		}
		off += putAddr(b[off:], f.Src)
	}
	off += copy(b[off:], f.Payload)
	return off, nil
}

// AppendEncode appends the encoded f (without FCS) to b.
func (f *Frame) AppendEncode(b []byte) ([]byte, error) {
	if err := f.check(); err != nil {
		return b, err
	}
	n := len(b)
	b = growLen(b, f.Len())
	if _, err := f.MarshalTo(b[n:]); err != nil {
		return b[:n], err
	}
	return b, nil
}

// growLen extends b by n octets, reallocating only when the capacity is
// short.
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, len(b)+n+16)
	copy(nb, b)
	return nb
}

// Decode parses an MPDU without FCS. The returned Frame's Payload aliases
// b: copy it before b is reused. Decode never panics on any input.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if len(b) > MaxMPDU {
		return f, fmt.Errorf("mac: decode: %d octets: %w", len(b), ErrTooLong)
	}
	if len(b) < 3 {
		return f, fmt.Errorf("mac: decode: %d octets: %w", len(b), ErrTruncated)
	}
	fc := binary.LittleEndian.Uint16(b)
	f.Type = FrameType(fc & fcType)
	f.FramePending = fc&fcPending != 0
	f.AckRequest = fc&fcAckRequest != 0
	f.PANIDCompression = fc&fcPANIDComp != 0
	f.Version = uint8(fc>>fcVersionShft) & 3
	dm := AddrMode(fc>>fcDstModeShft) & 3
	sm := AddrMode(fc>>fcSrcModeShft) & 3
	f.Seq = b[2]
	switch {
	case f.Type > TypeCommand:
		return f, fmt.Errorf("mac: decode: frame type %d: %w", f.Type, ErrUnsupported)
	case fc&fcSecurity != 0:
		return f, fmt.Errorf("mac: decode: security enabled: %w", ErrUnsupported)
	case f.Version > Version2006:
		return f, fmt.Errorf("mac: decode: frame version %d: %w", f.Version, ErrUnsupported)
	case dm == 1 || sm == 1:
		return f, fmt.Errorf("mac: decode: reserved address mode: %w", ErrMalformed)
	case f.PANIDCompression && (dm == AddrNone || sm == AddrNone):
		return f, fmt.Errorf("mac: decode: PAN ID compression without both addresses: %w", ErrMalformed)
	}
	hl := HeaderLen(dm, sm, f.PANIDCompression)
	if len(b) < hl {
		return f, fmt.Errorf("mac: decode: header of %d octets in %d: %w", hl, len(b), ErrTruncated)
	}
	off := 3
	if dm != AddrNone {
		f.DstPAN = binary.LittleEndian.Uint16(b[off:])
		off += 2
		f.Dst = readAddr(b[off:], dm)
		off += dm.Len()
	}
	if sm != AddrNone {
		if f.PANIDCompression {
			f.SrcPAN = f.DstPAN
		} else {
			f.SrcPAN = binary.LittleEndian.Uint16(b[off:])
			off += 2
		}
		f.Src = readAddr(b[off:], sm)
		off += sm.Len()
	}
	f.Payload = b[off:len(b):len(b)]
	return f, nil
}
