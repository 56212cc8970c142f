package spinel

// HDLC-lite framing, draft-rquattle-spinel-unified Appendix A.1.2.
//
// The draft names the CRC "CRC-16/CCITT (KERMIT)", but what OpenThread
// implements, and what every RCP on the market sends, is the X.25 variant:
// reflected polynomial 0x8408, initial value 0xFFFF, final XOR 0xFFFF,
// transmitted low byte first. That is what this file implements.

const (
	hdlcFlag   = 0x7E
	hdlcEscape = 0x7D
	hdlcXOR    = 0x20

	fcsInit = 0xFFFF
)

// DefaultMaxFrame bounds a decoded HDLC-lite frame (Spinel payload plus FCS).
// The largest frame an RCP sends is a STREAM_RAW of a 127-byte PSDU with
// metadata, well under 300 bytes; 2 KiB leaves room for long version strings.
const DefaultMaxFrame = 2048

var fcsTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0x8408
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

func fcsUpdate(fcs uint16, p []byte) uint16 {
	for _, b := range p {
		fcs = fcs>>8 ^ fcsTable[byte(fcs)^b]
	}
	return fcs
}

// FCS16 returns the HDLC-lite frame check sequence of p (CRC-16/X.25).
func FCS16(p []byte) uint16 { return fcsUpdate(fcsInit, p) ^ 0xFFFF }

// needsEscape reports whether b must be escaped on the wire: the flag, the
// escape byte, XON, XOFF and the vendor byte 0xF8 (Appendix A.1.2).
func needsEscape(b byte) bool {
	switch b {
	case hdlcFlag, hdlcEscape, 0x11, 0x13, 0xF8:
		return true
	}
	return false
}

// AppendEscaped appends p to dst with HDLC-lite escaping and no flags.
func AppendEscaped(dst, p []byte) []byte {
	for _, b := range p {
		if needsEscape(b) {
			dst = append(dst, hdlcEscape, b^hdlcXOR)
		} else {
			dst = append(dst, b)
		}
	}
	return dst
}

// AppendHDLC appends frame to dst as one HDLC-lite frame: a flag, the
// escaped frame and FCS, and a closing flag.
func AppendHDLC(dst, frame []byte) []byte {
	fcs := FCS16(frame)
	dst = append(dst, hdlcFlag)
	dst = AppendEscaped(dst, frame)
	dst = AppendEscaped(dst, []byte{byte(fcs), byte(fcs >> 8)})
	return append(dst, hdlcFlag)
}

// Decoder is a streaming HDLC-lite decoder. It resynchronises on every flag
// byte, so garbage between frames costs at most the frame it lands in.
// A Decoder is not safe for concurrent use.
type Decoder struct {
	max  int
	buf  []byte // unescaped bytes since the last flag
	esc  bool   // the previous byte was the escape byte
	drop bool   // the current frame overflowed max or was aborted

	// Counters, read them between Feed calls.
	Frames   uint64 // frames with a good FCS handed to emit
	BadFCS   uint64 // frames dropped for a wrong FCS or too short to hold one
	Oversize uint64 // frames dropped for exceeding the size bound
	Aborted  uint64 // frames dropped for an escape byte followed by a flag
}

// NewDecoder returns a decoder that drops frames longer than max bytes
// (after unescaping, FCS included); max <= 0 means DefaultMaxFrame.
func NewDecoder(max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &Decoder{max: max, buf: make([]byte, 0, 256)}
}

// Feed consumes p and calls emit once for every complete frame with a good
// FCS, in order. The frame passed to emit excludes the FCS and aliases the
// decoder's buffer: it is valid only during the call.
func (d *Decoder) Feed(p []byte, emit func(frame []byte)) {
	for _, b := range p {
		switch {
		case b == hdlcFlag:
			d.endFrame(emit)
		case d.drop:
		case b == hdlcEscape:
			d.esc = true
		default:
			if d.esc {
				b ^= hdlcXOR
				d.esc = false
			}
			if len(d.buf) >= d.max {
				d.drop = true
				d.Oversize++
				continue
			}
			d.buf = append(d.buf, b)
		}
	}
}

func (d *Decoder) endFrame(emit func([]byte)) {
	defer func() {
		d.buf, d.esc, d.drop = d.buf[:0], false, false
	}()
	switch {
	case d.drop:
		return
	case d.esc:
		d.Aborted++
		return
	case len(d.buf) == 0: // back-to-back flags are legal (Appendix A.1.2)
		return
	case len(d.buf) < 3: // not even one byte of payload plus the FCS
		d.BadFCS++
		return
	}
	n := len(d.buf) - 2
	got := uint16(d.buf[n]) | uint16(d.buf[n+1])<<8
	if FCS16(d.buf[:n]) != got {
		d.BadFCS++
		return
	}
	d.Frames++
	emit(d.buf[:n])
}
