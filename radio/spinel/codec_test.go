package spinel

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHDLCEncodeVectors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"reset notification", "81 02 43", "7E 81 02 43 D3 D3 7E"},
		{"escapes flag and escape", "81 03 36 7E 7D", "7E 81 03 36 7D 5E 7D 5D 6A F9 7E"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendHDLC([]byte{0xAA}, unhex(t, tc.in))
			if want := append([]byte{0xAA}, unhex(t, tc.want)...); !bytes.Equal(got, want) {
				t.Errorf("got % X, want % X", got, want)
			}
		})
	}
}

func TestHDLCEscapesXONXOFFAndVendorByte(t *testing.T) {
	got := AppendEscaped(nil, []byte{0x11, 0x13, 0xF8, 0x20})
	if want := unhex(t, "7D31 7D33 7DD8 20"); !bytes.Equal(got, want) {
		t.Errorf("got % X", got)
	}
}

func decodeAll(d *Decoder, in []byte) [][]byte {
	var out [][]byte
	d.Feed(in, func(f []byte) { out = append(out, bytes.Clone(f)) })
	return out
}

func TestDecoderResyncsAndCounts(t *testing.T) {
	good := AppendHDLC(nil, []byte{0x81, 0x02, 0x43})
	bad := bytes.Clone(good)
	bad[3] ^= 1
	var in []byte
	in = append(in, 0x12, 0x34) // garbage before the first flag
	in = append(in, good...)
	in = append(in, bad...)
	in = append(in, 0x7E, 0x7E, 0x7E)       // idle flags
	in = append(in, 0x7E, 0x81, 0x7D, 0x7E) // aborted by escape-flag
	in = append(in, good...)
	d := NewDecoder(0)
	// Byte at a time and all at once must agree.
	var split [][]byte
	for _, b := range in {
		split = append(split, decodeAll(d, []byte{b})...)
	}
	d2 := NewDecoder(0)
	whole := decodeAll(d2, in)
	if len(split) != 2 || len(whole) != 2 {
		t.Fatalf("frames: split %d whole %d", len(split), len(whole))
	}
	if d.BadFCS != 2 || d.Aborted != 1 || d.Frames != 2 {
		t.Errorf("counters %+v", d)
	}
}

func TestDecoderBoundsFrameSize(t *testing.T) {
	d := NewDecoder(300)
	big := AppendHDLC(nil, make([]byte, 400))
	small := AppendHDLC(nil, []byte{0x80, 0x00})
	got := decodeAll(d, append(big, small...))
	if len(got) != 1 || d.Oversize != 1 || cap(d.buf) > 1024 {
		t.Errorf("got %d frames, oversize %d, buf cap %d", len(got), d.Oversize, cap(d.buf))
	}
}

func TestPackedUint(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		wire string
	}{
		{0, "00"}, {127, "7F"}, {128, "8001"}, {1337, "B90A"}, // Appendix B.1
		{16383, "FF7F"}, {16384, "808001"}, {MaxUint, "FFFF7F"},
	} {
		got, err := AppendUint(nil, tc.v)
		if err != nil || !bytes.Equal(got, unhex(t, tc.wire)) {
			t.Errorf("AppendUint(%d) = % X, %v", tc.v, got, err)
		}
		v, n, err := ParseUint(unhex(t, tc.wire))
		if err != nil || v != tc.v || n != len(tc.wire)/2 {
			t.Errorf("ParseUint(%s) = %d, %d, %v", tc.wire, v, n, err)
		}
	}
	if _, err := AppendUint(nil, MaxUint+1); !errors.Is(err, ErrOverflow) {
		t.Errorf("AppendUint(2^21) = %v", err)
	}
	if _, _, err := ParseUint(unhex(t, "808080")); !errors.Is(err, ErrOverflow) {
		t.Errorf("4-byte packed int: %v", err)
	}
	if _, _, err := ParseUint(unhex(t, "80")); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: %v", err)
	}
}

func TestFrameVectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Frame
		wire string
	}{
		{"reset (B.2)", Frame{Header: 0x81, Cmd: CmdReset}, "8101"},
		{"reset notification (B.3)", Frame{Header: 0x80, Cmd: CmdPropValueIs, Prop: PropLastStatus, Value: []byte{0x72}}, "80060072"},
		{"get rcp api version", Frame{Header: MakeHeader(0, 3), Cmd: CmdPropValueGet, Prop: PropRCPAPIVersion}, "8302B001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.Append(nil)
			if err != nil || !bytes.Equal(got, unhex(t, tc.wire)) {
				t.Fatalf("Append = % X, %v", got, err)
			}
			back, err := ParseFrame(got)
			if err != nil || back.Header != tc.f.Header || back.Cmd != tc.f.Cmd || back.Prop != tc.f.Prop || !bytes.Equal(back.Value, tc.f.Value) {
				t.Errorf("ParseFrame = %+v, %v", back, err)
			}
		})
	}
	if h := MakeHeader(2, 9); h.IID() != 2 || h.TID() != 9 || byte(h) != 0xA9 {
		t.Errorf("header %#x", byte(h))
	}
}

func TestStreamRawRoundTrip(t *testing.T) {
	tx := TxRequest{PSDU: []byte{0x41, 0x88, 1, 0, 0}, Channel: 15, MaxCSMABackoffs: 4, MaxRetries: 3, CSMA: true}
	b, err := tx.Append(nil)
	if err != nil || !bytes.Equal(b, unhex(t, "0500 4188010000 0F 04 03 01")) {
		t.Fatalf("TxRequest = % X, %v", b, err)
	}
	back, err := ParseTxRequest(unhex(t, "0300 010203 14")) // channel only: the rest defaults
	if err != nil || back.Channel != 20 || !back.CSMA || back.MaxRetries != 3 || len(back.PSDU) != 3 {
		t.Errorf("ParseTxRequest = %+v, %v", back, err)
	}
	rx := RxFrame{PSDU: []byte{1, 2, 3, 4}, RSSI: -70, Noise: -100, Flags: 0, Channel: 15, LQI: 200, Timestamp: 42, Error: StatusOK}
	b, err = rx.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRxFrame(b)
	if err != nil || !bytes.Equal(got.PSDU, rx.PSDU) || got.RSSI != -70 || got.LQI != 200 || got.Channel != 15 || got.Timestamp != 42 {
		t.Errorf("ParseRxFrame = %+v, %v", got, err)
	}
	// No metadata at all: defaults.
	got, err = ParseRxFrame(unhex(t, "0200 AABB"))
	if err != nil || got.RSSI != -128 || got.LQI != 0 {
		t.Errorf("bare frame = %+v, %v", got, err)
	}
}

func TestStatus(t *testing.T) {
	if !StatusResetWatchdog.IsReset() || StatusNoAck.IsReset() {
		t.Error("IsReset")
	}
	var err error = StatusPropNotFound
	if !errors.Is(err, StatusPropNotFound) || err.Error() != "spinel: property not found" {
		t.Errorf("error %v", err)
	}
	if Status(9999).String() != "status 9999" {
		t.Error(Status(9999).String())
	}
}
