package stream

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/opaque-edge/gatewayd/coap"
)

// Signalling codes (RFC 8323 §5.1, §11.1): class 7.
const (
	CSM     coap.Code = 7<<5 | 1
	Ping    coap.Code = 7<<5 | 2
	Pong    coap.Code = 7<<5 | 3
	Release coap.Code = 7<<5 | 4
	Abort   coap.Code = 7<<5 | 5
)

// Signalling option numbers (RFC 8323 §5.2): each code has its own space.
const (
	MaxMessageSize     coap.OptionID = 2 // CSM, §5.3.1
	BlockWiseTransfer  coap.OptionID = 4 // CSM, §5.3.2
	Custody            coap.OptionID = 2 // Ping and Pong, §5.4.1
	AlternativeAddress coap.OptionID = 2 // Release, §5.5
	HoldOff            coap.OptionID = 4 // Release, §5.5
	BadCSMOption       coap.OptionID = 2 // Abort, §5.6
)

// BaseMaxMessageSize is Max-Message-Size before a peer's CSM says
// otherwise (RFC 8323 §5.3.1, RFC 7252 §4.6).
const BaseMaxMessageSize = 1152

// IsSignal reports a signalling code (7.00–7.31, RFC 8323 §5.1).
func IsSignal(c coap.Code) bool { return c.Class() == 7 }

// Framing errors.
var (
	ErrShort    = errors.New("stream: frame header incomplete")
	ErrTooLarge = errors.New("stream: message over the size limit")
	ErrWSLength = errors.New("stream: WebSocket message with a Len field") // RFC 8323 §4.2: Len is 0
)

// extLen is how many bytes of extended length a Len nibble announces
// (RFC 8323 §3.2: 13, 14 and 15 take 1, 2 and 4 bytes).
func extLen(nibble byte) int {
	switch nibble {
	case 13:
		return 1
	case 14:
		return 2
	case 15:
		return 4
	}
	return 0
}

// HeaderLen is the length of a TCP frame's header, Code included, from
// its first byte: what a reader must have before FrameSize can tell the
// frame's length.
func HeaderLen(first byte) int { return 2 + extLen(first>>4) }

// FrameSize reads the header at the start of b (RFC 8323 §3.2): hdr is
// the header's length up to the token (Len and TKL, the extended length,
// the Code), size the whole frame's. ErrShort when b does not hold the
// header yet.
func FrameSize(b []byte) (hdr, size int, err error) {
	if len(b) < 1 {
		return 0, 0, ErrShort
	}
	nibble, tkl := b[0]>>4, int(b[0]&0x0f)
	hdr = HeaderLen(b[0])
	if len(b) < hdr {
		return hdr, 0, ErrShort
	}
	var n uint64
	switch nibble {
	case 13:
		n = uint64(b[1]) + 13
	case 14:
		n = uint64(binary.BigEndian.Uint16(b[1:])) + 269
	case 15:
		n = uint64(binary.BigEndian.Uint32(b[1:])) + 65805
	default:
		n = uint64(nibble)
	}
	if tkl > coap.MaxTokenLen {
		return hdr, 0, coap.ErrTokenLength
	}
	total := uint64(hdr) + uint64(tkl) + n
	if total > 1<<31 {
		return hdr, 0, ErrTooLarge
	}
	return hdr, int(total), nil
}

// Decode parses one whole frame into m: the TCP and TLS framing of RFC
// 8323 §3.2, or with ws the WebSocket one of §4.2 (Len 0, the length
// being the WebSocket message's). Type and MID are left zero: a reliable
// transport has neither. Options are kept raw and, like the token and
// payload, alias b.
func Decode(m *coap.Message, b []byte, ws bool) error {
	if len(b) < 2 {
		return coap.ErrTruncated
	}
	m.Type, m.MID = 0, 0
	if ws {
		if b[0]>>4 != 0 {
			return ErrWSLength
		}
		m.Code = coap.Code(b[1])
		return m.DecodeBody(int(b[0]&0x0f), b[2:])
	}
	hdr, size, err := FrameSize(b)
	if errors.Is(err, ErrShort) {
		return coap.ErrTruncated
	}
	if err != nil {
		return err
	}
	if size != len(b) {
		return fmt.Errorf("%w: frame of %d bytes, header says %d", coap.ErrTruncated, len(b), size)
	}
	m.Code = coap.Code(b[hdr-1])
	return m.DecodeBody(int(b[0]&0x0f), b[hdr:])
}

// Size is the length of m's frame.
func Size(m *coap.Message, ws bool) int {
	body := m.Size() - 4 - len(m.Token) // options and payload
	return headerLen(body, ws) + len(m.Token) + body
}

// headerLen is the header's length for a body (options and payload) of n
// bytes.
func headerLen(n int, ws bool) int {
	switch {
	case ws || n < 13:
		return 2
	case n < 269:
		return 3
	case n < 65805:
		return 4
	}
	return 6
}

// AppendFrame appends m, framed for TCP (RFC 8323 §3.2) or, with ws, for
// WebSockets (§4.2), to buf. m's Type and MID are not sent.
func AppendFrame(buf []byte, m *coap.Message, ws bool) ([]byte, error) {
	size := m.Size() // the RFC 7252 encoding: 4 header bytes, then the token
	body := size - 4 - len(m.Token)
	if uint64(body) > 0xffffffff+65805 {
		return buf, ErrTooLarge
	}
	hl := headerLen(body, ws)
	start := len(buf)
	need := hl + size - 4
	// Encode as RFC 7252 does, placed so that its token lands right
	// after our header, then write the header over its first bytes. A
	// header shorter than four bytes leaves pad bytes in front, which
	// the frame is moved over.
	pad := max(0, 4-hl)
	buf = grow(buf, pad+need)
	f := buf[start:]
	if _, err := marshal(m, f[pad+hl-4:]); err != nil {
		return buf[:start], err
	}
	putHeader(f[pad:], m.Code, len(m.Token), body, ws)
	if pad > 0 {
		copy(f, f[pad:])
	}
	return buf[:start+need], nil
}

// marshal is m.MarshalTo with Type cleared: a reliable transport has no
// type, and an out-of-range one must not fail the encoding.
func marshal(m *coap.Message, b []byte) (int, error) {
	c := *m
	c.Type, c.MID = 0, 0
	return c.MarshalTo(b)
}

// putHeader writes the frame header (Len, TKL, extended length, Code).
func putHeader(b []byte, code coap.Code, tkl, body int, ws bool) {
	switch {
	case ws:
		b[0] = byte(tkl)
		b[1] = byte(code)
	case body < 13:
		b[0] = byte(body)<<4 | byte(tkl)
		b[1] = byte(code)
	case body < 269:
		b[0] = 13<<4 | byte(tkl)
		b[1] = byte(body - 13)
		b[2] = byte(code)
	case body < 65805:
		b[0] = 14<<4 | byte(tkl)
		binary.BigEndian.PutUint16(b[1:], uint16(body-269))
		b[3] = byte(code)
	default:
		b[0] = 15<<4 | byte(tkl)
		binary.BigEndian.PutUint32(b[1:], uint32(body-65805))
		b[5] = byte(code)
	}
}

// grow extends buf by n bytes.
func grow(buf []byte, n int) []byte {
	if cap(buf)-len(buf) >= n {
		return buf[:len(buf)+n]
	}
	nb := make([]byte, len(buf)+n, 2*cap(buf)+n)
	copy(nb, buf)
	return nb
}
