// Package mac encodes and decodes IEEE 802.15.4 MAC frames of the 2003,
// 2006 and 2015 formats (frame versions 0, 1 and 2): the frame control
// field, sequence number (or its suppression), PAN IDs and their
// compression, short and extended addresses, the Information Elements of
// version 2 frames, and the FCS (CRC-16, see FCS).
//
// The codec is buffer-first. Decode returns a Frame whose IEs and Payload
// alias the input; AppendEncode and MarshalTo write into the caller's
// buffer. Data and acknowledgment frames are what the gateway sends; beacon
// and MAC command frames decode too, with their bodies left as raw Payload.
// Information Elements are kept as raw octets: Decode finds where they end
// and the payload begins, and ParseIEs lists them. Frames with security
// enabled are reported with ErrSecured, reserved frame types and versions
// with ErrUnsupported, rather than guessed at.
//
// Section numbers are of IEEE 802.15.4-2006 where they say "2006", else of
// IEEE 802.15.4-2015.
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

// Size limits (2006 §6.4.1 aMaxPHYPacketSize).
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
	// ErrSecured is a frame with the Security Enabled bit: its payload
	// is encrypted or authenticated with keys the codec does not hold.
	// It is an ErrUnsupported.
	ErrSecured = fmt.Errorf("%w: security enabled", ErrUnsupported)
)

// FrameType is the frame type subfield (§7.2.1.1; 2006 §7.2.1.1.1).
type FrameType uint8

// Frame types. 802.15.4-2015 adds multipurpose (5), fragment (6) and
// extended (7) frames, whose frame control differs; they are
// ErrUnsupported.
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

// Frame versions (§7.2.1.9, Table 7-4). Version 3 is reserved.
const (
	Version2003 uint8 = 0 // IEEE 802.15.4-2003
	Version2006 uint8 = 1 // IEEE 802.15.4-2006
	Version2015 uint8 = 2 // IEEE 802.15.4-2015 (and -2020): IEs, sequence number suppression, the PAN ID table
)

// Frame control bits (§7.2.1, Figure 7-2), as a little-endian uint16: bits
// 0-2 frame type, 3 security enabled, 4 frame pending, 5 AR, 6 PAN ID
// compression, 7 reserved, 8 sequence number suppression, 9 IE present,
// 10-11 destination addressing mode, 12-13 frame version, 14-15 source
// addressing mode. Bits 8 and 9 are reserved in versions 0 and 1 (2006
// §7.2.1.1 has bits 7-9 reserved).
const (
	fcType        = 0x0007
	fcSecurity    = 0x0008
	fcPending     = 0x0010
	fcAckRequest  = 0x0020
	fcPANIDComp   = 0x0040
	fcSeqSuppress = 0x0100 // §7.2.1.6
	fcIEPresent   = 0x0200 // §7.2.1.7
	fcDstModeShft = 10
	fcVersionShft = 12
	fcSrcModeShft = 14
)

// Frame is one MAC frame without its FCS.
//
// PAN IDs: which PAN ID fields a frame carries follows from its version,
// addressing modes and PANIDCompression (HasDstPAN, HasSrcPAN). Where the
// source PAN ID is elided but the destination PAN ID is present (intra-PAN),
// Decode sets SrcPAN = DstPAN; a PAN ID field not on air otherwise decodes
// as 0, and the encoder ignores fields that are not on air.
type Frame struct {
	Type             FrameType
	Security         bool // never set by Decode: secured frames are ErrSecured
	FramePending     bool
	AckRequest       bool
	PANIDCompression bool
	Version          uint8 // Version2003, Version2006 or Version2015
	// SeqSuppressed (version 2 only) leaves the sequence number out of the
	// frame (§7.2.1.6); Seq is then 0 after Decode and ignored by the
	// encoder.
	SeqSuppressed bool
	Seq           uint8
	DstPAN        uint16
	Dst           Addr
	SrcPAN        uint16
	Src           Addr
	// IEs (version 2 only) are the frame's Information Elements exactly as
	// on air (§7.4): the header IE list, its termination, the payload IE
	// list and its termination, whichever are present. The encoder sets
	// the IE Present bit (§7.2.1.7) when IEs is not empty and checks that
	// the list is well formed and terminated if a payload follows.
	// ParseIEs lists them. After Decode it aliases the decoded buffer.
	IEs     []byte
	Payload []byte // MAC payload after the IEs; after Decode it aliases the decoded buffer
}

// panIDs says which PAN ID fields are on air for a frame's version,
// addressing modes and PAN ID Compression bit.
func panIDs(version uint8, dst, src AddrMode, comp bool) (dstPAN, srcPAN bool, err error) {
	if version < Version2015 {
		// 2006 §7.2.1.1.5: compression means both addresses are present
		// and the source PAN ID is elided.
		if comp && (dst == AddrNone || src == AddrNone) {
			return false, false, fmt.Errorf("PAN ID compression without both addresses: %w", ErrMalformed)
		}
		return dst != AddrNone, src != AddrNone && !comp, nil
	}
	// §7.2.1.5, Table 7-2 (frame version 2), as rows of (destination
	// addressing, source addressing, PAN ID Compression) → PAN ID fields
	// present:
	//
	//	none,     none,     0 → neither          none,     none,     1 → destination
	//	present,  none,     0 → destination      present,  none,     1 → neither
	//	none,     present,  0 → source           none,     present,  1 → neither
	//	extended, extended, 0 → destination      extended, extended, 1 → neither
	//	short,    short,    0 → both             short,    short,    1 → destination
	//	short,    extended, 0 → both             short,    extended, 1 → destination
	//	extended, short,    0 → both             extended, short,    1 → destination
	switch {
	case dst == AddrNone && src == AddrNone:
		return comp, false, nil
	case src == AddrNone:
		return !comp, false, nil
	case dst == AddrNone:
		return false, !comp, nil
	case dst == AddrExtended && src == AddrExtended:
		return !comp, false, nil
	default: // at least one short address
		return true, !comp, nil
	}
}

// HasDstPAN reports whether f carries a Destination PAN ID field. A
// version 2 frame without one (extended to extended with PAN ID
// Compression, for one) is for the receiver's own PAN.
func (f *Frame) HasDstPAN() bool {
	d, _, _ := panIDs(f.Version, f.Dst.mode, f.Src.mode, f.PANIDCompression)
	return d
}

// HasSrcPAN reports whether f carries a Source PAN ID field.
func (f *Frame) HasSrcPAN() bool {
	_, s, _ := panIDs(f.Version, f.Dst.mode, f.Src.mode, f.PANIDCompression)
	return s
}

// HeaderLen returns the MAC header length, without FCS, of a version 0 or
// 1 frame with the given addressing: frame control, sequence number, PAN
// IDs and addresses. Frame.HeaderLen covers every version.
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

// HeaderLen returns the length of f's frame control, sequence number, PAN
// ID and address fields; IEs are not counted.
func (f *Frame) HeaderLen() int {
	d, s, _ := panIDs(f.Version, f.Dst.mode, f.Src.mode, f.PANIDCompression)
	return headerLen(f.Dst.mode, f.Src.mode, d, s, f.SeqSuppressed)
}

func headerLen(dst, src AddrMode, dstPAN, srcPAN, seqSuppressed bool) int {
	n := 3 + dst.Len() + src.Len()
	if seqSuppressed {
		n--
	}
	if dstPAN {
		n += 2
	}
	if srcPAN {
		n += 2
	}
	return n
}

// Len returns the MPDU length of f without FCS.
func (f *Frame) Len() int { return f.HeaderLen() + len(f.IEs) + len(f.Payload) }

// MaxPayload returns the largest MAC payload a version 0 or 1 frame with
// this addressing can carry in MaxMPDU octets.
func MaxPayload(dst, src AddrMode, panIDCompression bool) int {
	return MaxMPDU - HeaderLen(dst, src, panIDCompression)
}

// MaxPayload returns the largest Payload f's header and IEs leave room
// for in MaxMPDU octets.
func (f *Frame) MaxPayload() int { return MaxMPDU - f.HeaderLen() - len(f.IEs) }

func (f *Frame) check() error {
	if f.Type > TypeCommand {
		return fmt.Errorf("mac: encode: frame type %d: %w", f.Type, ErrUnsupported)
	}
	if f.Security {
		return fmt.Errorf("mac: encode: security header: %w", ErrUnsupported)
	}
	if f.Version > Version2015 {
		return fmt.Errorf("mac: encode: frame version %d: %w", f.Version, ErrUnsupported)
	}
	if f.Version < Version2015 && (f.SeqSuppressed || len(f.IEs) > 0) {
		return fmt.Errorf("mac: encode: sequence number suppression and IEs need frame version 2: %w", ErrMalformed)
	}
	if f.Dst.mode != AddrNone && !f.Dst.IsValid() || f.Src.mode != AddrNone && !f.Src.IsValid() {
		return fmt.Errorf("mac: encode: address mode: %w", ErrMalformed)
	}
	if _, _, err := panIDs(f.Version, f.Dst.mode, f.Src.mode, f.PANIDCompression); err != nil {
		return fmt.Errorf("mac: encode: %w", err)
	}
	if len(f.IEs) > 0 {
		n, closed, err := scanIEs(f.IEs)
		switch {
		case err != nil:
			return fmt.Errorf("mac: encode: %w", err)
		case n != len(f.IEs):
			// What follows a closing termination is payload to a decoder.
			return fmt.Errorf("mac: encode: %d octets after the IE list's termination: %w", len(f.IEs)-n, ErrMalformed)
		case len(f.Payload) > 0 && !closed:
			return fmt.Errorf("mac: encode: payload after an IE list without HT2 or PT (§7.4.1): %w", ErrMalformed)
		}
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
	if f.SeqSuppressed {
		fc |= fcSeqSuppress
	}
	if len(f.IEs) > 0 {
		fc |= fcIEPresent
	}
	binary.LittleEndian.PutUint16(b, fc)
	off := 2
	if !f.SeqSuppressed {
		b[off] = f.Seq
		off++
	}
	dstPAN, srcPAN, _ := panIDs(f.Version, f.Dst.mode, f.Src.mode, f.PANIDCompression)
	// §7.2, Figure 7-1: destination PAN ID, destination address, source
	// PAN ID, source address, in that order, each only if present.
	if dstPAN {
		binary.LittleEndian.PutUint16(b[off:], f.DstPAN)
		off += 2
	}
	off += putAddr(b[off:], f.Dst)
	if srcPAN {
		binary.LittleEndian.PutUint16(b[off:], f.SrcPAN)
		off += 2
	}
	off += putAddr(b[off:], f.Src)
	off += copy(b[off:], f.IEs)
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

// Decode parses an MPDU without FCS. The returned Frame's IEs and Payload
// alias b: copy them before b is reused. Decode never panics on any input.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if len(b) > MaxMPDU {
		return f, fmt.Errorf("mac: decode: %d octets: %w", len(b), ErrTooLong)
	}
	if len(b) < 2 {
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
	var iePresent bool
	if f.Version == Version2015 {
		// Reserved in versions 0 and 1, which ignore them (2006
		// §7.2.1.1); a version 2 frame means them (§7.2.1.6, §7.2.1.7).
		f.SeqSuppressed = fc&fcSeqSuppress != 0
		iePresent = fc&fcIEPresent != 0
	}
	switch {
	case f.Type > TypeCommand:
		return f, fmt.Errorf("mac: decode: frame type %d: %w", f.Type, ErrUnsupported)
	case fc&fcSecurity != 0:
		return f, fmt.Errorf("mac: decode: %w", ErrSecured)
	case f.Version > Version2015:
		return f, fmt.Errorf("mac: decode: frame version %d: %w", f.Version, ErrUnsupported)
	case dm == 1 || sm == 1:
		return f, fmt.Errorf("mac: decode: reserved address mode: %w", ErrMalformed)
	}
	dstPAN, srcPAN, err := panIDs(f.Version, dm, sm, f.PANIDCompression)
	if err != nil {
		return f, fmt.Errorf("mac: decode: %w", err)
	}
	if hl := headerLen(dm, sm, dstPAN, srcPAN, f.SeqSuppressed); len(b) < hl {
		return f, fmt.Errorf("mac: decode: header of %d octets in %d: %w", hl, len(b), ErrTruncated)
	}
	off := 2
	if !f.SeqSuppressed {
		f.Seq = b[off]
		off++
	}
	if dstPAN {
		f.DstPAN = binary.LittleEndian.Uint16(b[off:])
		off += 2
	}
	f.Dst = readAddr(b[off:], dm)
	off += dm.Len()
	switch {
	case srcPAN:
		f.SrcPAN = binary.LittleEndian.Uint16(b[off:])
		off += 2
	case sm != AddrNone && dstPAN:
		f.SrcPAN = f.DstPAN // intra-PAN: the source PAN ID is the destination's
	}
	f.Src = readAddr(b[off:], sm)
	off += sm.Len()
	if iePresent {
		n, closed, err := scanIEs(b[off:])
		if err != nil {
			return f, fmt.Errorf("mac: decode: %w", err)
		}
		if n == 0 {
			return f, fmt.Errorf("mac: decode: IE Present without IEs: %w", ErrMalformed)
		}
		f.IEs = b[off : off+n : off+n]
		off += n
		if !closed {
			// §7.4.1: a list without a termination runs to the end of
			// the frame; nothing follows it.
			f.Payload = b[off:off:off]
			return f, nil
		}
	}
	f.Payload = b[off:len(b):len(b)]
	return f, nil
}
