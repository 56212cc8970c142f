package mac

import (
	"encoding/binary"
	"fmt"
)

// Information Elements (§7.4) of version 2 frames. Each IE starts with a
// 2-octet descriptor, little-endian like every multi-octet field (§7.4.1):
//
//	header IE  (§7.4.2.1): bits 0-6 Length, bits 7-14 Element ID, bit 15 Type = 0
//	payload IE (§7.4.3):   bits 0-10 Length, bits 11-14 Group ID, bit 15 Type = 1
//
// Length counts the content octets after the descriptor. The header IE
// list follows the addressing fields (and the auxiliary security header,
// which this codec does not decode); the payload IE list starts the MAC
// payload. §7.4.1 says how a list ends: a header IE list is closed by HT1
// when payload IEs follow and by HT2 when a payload without payload IEs
// follows; a payload IE list is closed by PT when a payload follows. A
// list that nothing follows needs no termination and runs to the end of
// the frame.
const (
	IEHT1 uint8 = 0x7e // Header Termination 1 IE (§7.4.2.17): payload IEs follow
	IEHT2 uint8 = 0x7f // Header Termination 2 IE (§7.4.2.18): the payload follows
	IEPT  uint8 = 0x0f // Payload Termination IE group ID (§7.4.3.3): the payload follows

	ieTypePayload    = 0x8000
	headerIEMaxLen   = 0x7f  // 7-bit Length
	payloadIEMaxLen  = 0x7ff // 11-bit Length
	headerIEIDShift  = 7
	payloadIEIDShift = 11
)

// IE is one Information Element of a version 2 frame.
type IE struct {
	Payload bool   // a payload IE (Type 1); false: a header IE (Type 0)
	ID      uint8  // the Element ID of a header IE, the Group ID of a payload IE
	Content []byte // aliases the list it was parsed from
}

// scanIEs walks the IE lists at the start of b, as they follow a version 2
// frame's addressing fields with IE Present set, and returns how many
// octets they take and whether a termination (HT2, or PT after HT1)
// closed them so that a payload follows. It never reads past b.
func scanIEs(b []byte) (n int, closed bool, err error) {
	payloadIEs := false
	for n < len(b) {
		if len(b)-n < 2 {
			return n, false, fmt.Errorf("IE descriptor at offset %d cut short: %w", n, ErrTruncated)
		}
		d := binary.LittleEndian.Uint16(b[n:])
		var l int
		var id uint8
		if !payloadIEs {
			if d&ieTypePayload != 0 {
				return n, false, fmt.Errorf("payload IE at offset %d without HT1 before it: %w", n, ErrMalformed)
			}
			l, id = int(d&headerIEMaxLen), uint8(d>>headerIEIDShift)
		} else {
			if d&ieTypePayload == 0 {
				return n, false, fmt.Errorf("header IE at offset %d after HT1: %w", n, ErrMalformed)
			}
			l, id = int(d&payloadIEMaxLen), uint8(d>>payloadIEIDShift)&0x0f
		}
		if l > len(b)-n-2 {
			return n, false, fmt.Errorf("IE at offset %d: %d content octets in %d: %w", n, l, len(b)-n-2, ErrTruncated)
		}
		n += 2 + l
		switch {
		case !payloadIEs && id == IEHT1:
			payloadIEs = true
		case !payloadIEs && id == IEHT2, payloadIEs && id == IEPT:
			return n, true, nil
		}
	}
	return n, false, nil
}

// ParseIEs lists the Information Elements in b, a Frame's IEs, in order,
// terminations included. The contents alias b.
func ParseIEs(b []byte) ([]IE, error) {
	n, _, err := scanIEs(b)
	if err != nil {
		return nil, fmt.Errorf("mac: IEs: %w", err)
	}
	if n != len(b) {
		return nil, fmt.Errorf("mac: IEs: %d octets after the termination: %w", len(b)-n, ErrMalformed)
	}
	var ies []IE
	payloadIEs := false
	for off := 0; off < n; {
		d := binary.LittleEndian.Uint16(b[off:])
		ie := IE{Payload: payloadIEs}
		var l int
		if payloadIEs {
			l, ie.ID = int(d&payloadIEMaxLen), uint8(d>>payloadIEIDShift)&0x0f
		} else {
			l, ie.ID = int(d&headerIEMaxLen), uint8(d>>headerIEIDShift)
			payloadIEs = ie.ID == IEHT1
		}
		ie.Content = b[off+2 : off+2+l : off+2+l]
		ies = append(ies, ie)
		off += 2 + l
	}
	return ies, nil
}

// AppendHeaderIE appends a header IE with element ID id to b.
func AppendHeaderIE(b []byte, id uint8, content []byte) ([]byte, error) {
	if len(content) > headerIEMaxLen {
		return b, fmt.Errorf("mac: header IE %#02x: %d octets: %w", id, len(content), ErrTooLong)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(id)<<headerIEIDShift|uint16(len(content)))
	return append(b, content...), nil
}

// AppendPayloadIE appends a payload IE with group ID group (0-15) to b.
func AppendPayloadIE(b []byte, group uint8, content []byte) ([]byte, error) {
	if group > 0x0f {
		return b, fmt.Errorf("mac: payload IE group %d: %w", group, ErrMalformed)
	}
	if len(content) > payloadIEMaxLen {
		return b, fmt.Errorf("mac: payload IE group %d: %d octets: %w", group, len(content), ErrTooLong)
	}
	b = binary.LittleEndian.AppendUint16(b, ieTypePayload|uint16(group)<<payloadIEIDShift|uint16(len(content)))
	return append(b, content...), nil
}
