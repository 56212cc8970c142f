package slipradio

import (
	"bytes"
	"errors"
	"testing"
)

func decodeAll(t testing.TB, d *Decoder, stream []byte) (frames [][]byte, drops []error) {
	d.Feed(stream, func(f []byte) { frames = append(frames, bytes.Clone(f)) }, func(err error) { drops = append(drops, err) })
	return
}

func TestSLIPRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"plain", []byte("!S\x01\x00hello")},
		{"specials", []byte{End, Esc, EscEnd, EscEsc, End, End, Esc}},
		{"one byte", []byte{0x41}},
		{"all bytes", func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendFrame(nil, tt.in)
			if bytes.Count(enc, []byte{End}) != 2 {
				t.Fatalf("encoding %x has End inside", enc)
			}
			var d Decoder
			frames, drops := decodeAll(t, &d, enc)
			if len(frames) != 1 || !bytes.Equal(frames[0], tt.in) || len(drops) != 0 {
				t.Fatalf("decoded %x (drops %v), want %x", frames, drops, tt.in)
			}
		})
	}
}

func TestSLIPDecoderAcrossFeedsAndNoise(t *testing.T) {
	stream := AppendFrame(nil, []byte{1, End, 2})
	stream = append(stream, AppendFrame(nil, []byte{3})...)
	var d Decoder
	var got [][]byte
	for _, b := range stream { // one byte at a time
		d.Feed([]byte{b}, func(f []byte) { got = append(got, bytes.Clone(f)) }, nil)
	}
	if len(got) != 2 || !bytes.Equal(got[0], []byte{1, End, 2}) || !bytes.Equal(got[1], []byte{3}) {
		t.Fatalf("got %x", got)
	}
}

func TestSLIPDecoderDropsBadFramesAndRecovers(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   error
	}{
		{"bad escape", []byte{End, 1, Esc, 0x00, 2, End, 7, End}, ErrBadEscape},
		{"escape at end", []byte{1, Esc, End, 7, End}, ErrBadEscape},
		{"too long", append(append([]byte{End}, bytes.Repeat([]byte{1}, 20)...), End, 7, End), ErrFrameTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decoder{Max: 16}
			frames, drops := decodeAll(t, &d, tt.stream)
			if len(drops) != 1 || !errors.Is(drops[0], tt.want) {
				t.Fatalf("drops = %v, want %v", drops, tt.want)
			}
			if len(frames) != 1 || !bytes.Equal(frames[0], []byte{7}) {
				t.Fatalf("frames = %x, want the next frame only", frames)
			}
		})
	}
}

func FuzzSLIPDecoder(f *testing.F) {
	f.Add([]byte{End, '!', 'R', 1, 0, 1, End})
	f.Add(AppendFrame(nil, []byte{'!', 'M', 0, 0x12, 0x4b, 0, 0, 0, 0, 1}))
	f.Add(AppendFrame(nil, []byte{0x41, 0xd8, 0x01, 0xce, 0xfa, 0xff, 0xff, End, Esc}))
	f.Add([]byte{Esc, Esc, End, Esc})
	f.Fuzz(func(t *testing.T, stream []byte) {
		d := Decoder{Max: 64}
		d.Feed(stream, func(fr []byte) {
			if len(fr) == 0 || len(fr) > 64 {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			// Round trip: what was decoded encodes and decodes to itself.
			var d2 Decoder
			var again [][]byte
			d2.Feed(AppendFrame(nil, fr), func(g []byte) { again = append(again, bytes.Clone(g)) }, nil)
			if len(again) != 1 || !bytes.Equal(again[0], fr) {
				t.Fatalf("round trip of %x gave %x", fr, again)
			}
		}, nil)
	})
}
