package spinel

import (
	"bytes"
	"testing"
)

// seeds are real frames as an OpenThread RCP sends and receives them.
var seeds = [][]byte{
	{0x81, 0x01},                                        // CMD_RESET
	{0x80, 0x06, 0x00, 0x72},                            // LAST_STATUS RESET_SOFTWARE
	{0x81, 0x06, 0x01, 0x04, 0x03},                      // PROTOCOL_VERSION 4.3
	{0x82, 0x06, 0x05, 0x18, 0x22, 0x81, 0x04},          // CAPS
	{0x83, 0x06, 0x08, 0x18, 0xB4, 0x30, 0, 0, 0, 0, 1}, // HWADDR
	{0x84, 0x03, 0x36, 0xCE, 0xFA},                      // SET PANID
	{0x85, 0x02, 0xB0, 0x01},                            // GET RCP_API_VERSION
	{0x86, 0x03, 0x71, 0x07, 0x00, 0x41, 0x88, 0x01, 0xCE, 0xFA, 0, 0, 0x0F, 0x04, 0x03, 0x01}, // STREAM_RAW tx
	{0x86, 0x06, 0x00, 0x00, 0x00, 0x00}, // tx-done OK
	{0x80, 0x06, 0x71, 0x04, 0x00, 0x01, 0x02, 0x11, 0x22, 0xBA, 0x9C, 0x00, 0x00,
		0x0A, 0x00, 0x0F, 0xC8, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}, // STREAM_RAW rx
}

// FuzzDecoder feeds arbitrary bytes to the HDLC-lite decoder. Properties:
// it never panics or exceeds its bound; any frame it emits re-encodes to
// bytes that decode back to the same frame; and cutting the input into
// pieces changes nothing.
func FuzzDecoder(f *testing.F) {
	for _, s := range seeds {
		f.Add(AppendHDLC(nil, s), 3)
	}
	f.Add([]byte{0x7E, 0x81, 0x03, 0x36, 0x7D, 0x5E, 0x7D, 0x5D, 0x6A, 0xF9, 0x7E}, 1)
	f.Add([]byte{0x7D, 0x7E, 0x7D, 0x7D, 0x7E, 0x00}, 2)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		d := NewDecoder(300)
		var whole [][]byte
		d.Feed(in, func(fr []byte) {
			if len(fr) > 300 {
				t.Fatalf("frame of %d bytes past the bound", len(fr))
			}
			whole = append(whole, bytes.Clone(fr))
		})
		d2 := NewDecoder(300)
		var pieces [][]byte
		emit := func(fr []byte) { pieces = append(pieces, bytes.Clone(fr)) }
		if cut <= 0 {
			cut = 1
		}
		for p := in; len(p) > 0; {
			n := min(cut, len(p))
			d2.Feed(p[:n], emit)
			p = p[n:]
		}
		if len(whole) != len(pieces) || d.BadFCS != d2.BadFCS {
			t.Fatalf("whole %d frames, pieces %d", len(whole), len(pieces))
		}
		for i, fr := range whole {
			if !bytes.Equal(fr, pieces[i]) {
				t.Fatalf("frame %d differs", i)
			}
			var again [][]byte
			NewDecoder(300).Feed(AppendHDLC(nil, fr), func(b []byte) { again = append(again, bytes.Clone(b)) })
			if len(again) != 1 || !bytes.Equal(again[0], fr) {
				t.Fatalf("re-encoded frame % X decodes to %x", fr, again)
			}
		}
	})
}

// FuzzFrame parses arbitrary Spinel frames and, for what parses, checks
// the metadata decoders too. Properties: no panic; a parsed frame encodes
// back to the same bytes when its integers were minimally packed.
func FuzzFrame(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := ParseFrame(in)
		if err != nil {
			return
		}
		out, err := fr.Append(nil)
		if err != nil {
			t.Fatalf("parsed frame does not encode: %v", err)
		}
		if len(out) > len(in) {
			t.Fatalf("re-encoding grew: % X -> % X", in, out)
		}
		back, err := ParseFrame(out)
		if err != nil || back.Cmd != fr.Cmd || back.Prop != fr.Prop || back.Header != fr.Header || !bytes.Equal(back.Value, fr.Value) {
			t.Fatalf("round trip: %+v -> %+v, %v", fr, back, err)
		}
		switch fr.Prop {
		case PropStreamRaw:
			if rx, err := ParseRxFrame(fr.Value); err == nil && len(rx.PSDU) <= MaxPSDU {
				if _, err := rx.Append(nil); err != nil {
					t.Fatalf("rx frame does not encode: %v", err)
				}
			}
			if tx, err := ParseTxRequest(fr.Value); err == nil && len(tx.PSDU) <= MaxPSDU {
				b, err := tx.Append(nil)
				if err != nil {
					t.Fatal(err)
				}
				tx2, err := ParseTxRequest(b)
				if err != nil || !bytes.Equal(tx2.PSDU, tx.PSDU) || tx2.Channel != tx.Channel || tx2.CSMA != tx.CSMA || tx2.MaxRetries != tx.MaxRetries {
					t.Fatalf("tx round trip %+v -> %+v, %v", tx, tx2, err)
				}
			}
		case PropLastStatus:
			_, _ = ParseStatus(fr.Value)
		default:
			_, _ = ParseUints(fr.Value)
			_ = ParseUTF8(fr.Value)
		}
	})
}

// FuzzUint checks the packed-integer codec both ways: every accepted
// encoding decodes to a value that encodes to at most as many bytes, and
// every value up to 2^21-1 round-trips.
func FuzzUint(f *testing.F) {
	for _, s := range []string{"\x00", "\x7f", "\x80\x01", "\xb9\x0a", "\xff\xff\x7f", "\x80\x80\x80\x01", "\x80\x00"} {
		f.Add([]byte(s), uint32(1337))
	}
	f.Fuzz(func(t *testing.T, in []byte, v uint32) {
		if x, n, err := ParseUint(in); err == nil {
			if n < 1 || n > 3 || x > MaxUint {
				t.Fatalf("ParseUint(% X) = %d, %d", in, x, n)
			}
			b, err := AppendUint(nil, x)
			if err != nil || len(b) > n {
				t.Fatalf("re-encode %d = % X, %v", x, b, err)
			}
		}
		v &= MaxUint
		b, err := AppendUint(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		x, n, err := ParseUint(b)
		if err != nil || x != v || n != len(b) {
			t.Fatalf("%d -> % X -> %d, %d, %v", v, b, x, n, err)
		}
	})
}
