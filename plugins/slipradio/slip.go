// Package slipradio drives a Contiki-NG slip-radio (examples/slip-radio)
// over a serial port, as a gatewayd radio plugin: SLIP framing (RFC 1055)
// and the slip-radio command set, behind the sdk.Radio interface.
// cmd/gatewayd-slipradio is the plugin executable.
package slipradio

import "errors"

// SLIP special bytes (RFC 1055).
const (
	End    = 0xC0 // ends (and, as Contiki sends it, may start) a frame
	Esc    = 0xDB // escapes the next byte
	EscEnd = 0xDC // Esc EscEnd is a data 0xC0
	EscEsc = 0xDD // Esc EscEsc is a data 0xDB
)

// MaxFrame bounds a decoded frame: a slip-radio command with a 127-byte
// PSDU and its header and attributes fits many times over.
const MaxFrame = 1024

// Decoder errors, counted rather than returned: a serial line recovers at
// the next End.
var (
	ErrFrameTooLong = errors.New("slipradio: slip frame too long")
	ErrBadEscape    = errors.New("slipradio: bad slip escape")
)

// AppendFrame appends the SLIP encoding of p to dst: an End first (which
// flushes line noise on the device's side, as Contiki's own host tools
// do), the escaped bytes, an End last.
func AppendFrame(dst, p []byte) []byte {
	dst = append(dst, End)
	for _, b := range p {
		switch b {
		case End:
			dst = append(dst, Esc, EscEnd)
		case Esc:
			dst = append(dst, Esc, EscEsc)
		default:
			dst = append(dst, b)
		}
	}
	return append(dst, End)
}

// Decoder splits a SLIP byte stream into frames. Empty frames (back-to-back
// End bytes) are skipped; a frame over Max bytes or with a bad escape is
// dropped whole, and decoding resumes after the next End. The zero Decoder
// is ready, with Max = MaxFrame.
type Decoder struct {
	Max int // frame size limit; 0 means MaxFrame

	buf  []byte
	esc  bool
	drop error // why the current frame is being dropped; nil when it is not
}

// Feed decodes p. For each complete frame it calls frame, whose argument is
// only valid during the call; for each dropped frame it calls dropped (if
// not nil) with the reason.
func (d *Decoder) Feed(p []byte, frame func([]byte), dropped func(error)) {
	max := d.Max
	if max <= 0 {
		max = MaxFrame
	}
	for _, b := range p {
		if b == End {
			switch {
			case d.drop != nil:
				if dropped != nil {
					dropped(d.drop)
				}
			case d.esc:
				if dropped != nil {
					dropped(ErrBadEscape)
				}
			case len(d.buf) > 0:
				frame(d.buf)
			}
			d.buf, d.esc, d.drop = d.buf[:0], false, nil
			continue
		}
		if d.drop != nil {
			continue
		}
		if d.esc {
			d.esc = false
			switch b {
			case EscEnd:
				b = End
			case EscEsc:
				b = Esc
			default:
				d.drop = ErrBadEscape
				continue
			}
		} else if b == Esc {
			d.esc = true
			continue
		}
		if len(d.buf) >= max {
			d.drop = ErrFrameTooLong
			d.buf = d.buf[:0]
			continue
		}
		d.buf = append(d.buf, b)
	}
}
