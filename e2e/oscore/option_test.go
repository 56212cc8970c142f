package oscore

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseOptionValue(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want OptionValue
		err  bool
	}{
		{name: "empty is all flags zero", in: ""},
		{name: "C.4 piv and empty kid", in: "0914", want: OptionValue{PIV: h("14"), HasKID: true, KID: []byte{}}},
		{name: "C.5 piv and kid", in: "091400", want: OptionValue{PIV: h("14"), HasKID: true, KID: h("00")}},
		{name: "C.6 kid context", in: "19140837cbf3210017a2d3", want: OptionValue{PIV: h("14"), HasKIDContext: true, KIDContext: h("37cbf3210017a2d3"), HasKID: true, KID: []byte{}}},
		{name: "C.8 piv zero", in: "0100", want: OptionValue{PIV: h("00")}},
		{name: "five byte piv", in: "05ffffffffff", want: OptionValue{PIV: h("ffffffffff")}},
		{name: "kid only", in: "08aabb", want: OptionValue{HasKID: true, KID: h("aabb")}},
		{name: "empty kid context", in: "1800", want: OptionValue{HasKIDContext: true, KIDContext: []byte{}, HasKID: true, KID: []byte{}}},
		{name: "0x00 must be sent empty", in: "00", err: true},
		{name: "reserved bit 0x20", in: "2914", err: true},
		{name: "reserved bit 0x80", in: "8914", err: true},
		{name: "reserved piv length 6", in: "06010203040506", err: true},
		{name: "reserved piv length 7", in: "0701020304050607", err: true},
		{name: "piv truncated", in: "0314", err: true},
		{name: "piv with leading zero", in: "020014", err: true},
		{name: "kid context length missing", in: "11 14", err: true},
		{name: "kid context truncated", in: "110503", err: true},
		{name: "trailing bytes without kid", in: "011400", err: true},
		{name: "trailing bytes after kid context", in: "10 01 aa bb", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := h(tt.in)
			got, err := ParseOptionValue(in)
			if tt.err {
				if !errors.Is(err, ErrDecode) {
					t.Fatalf("err = %v, want ErrDecode", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !optionValueEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			enc, err := got.Append(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, in) || got.Len() != len(in) {
				t.Errorf("re-encoded %x (Len %d), want %x", enc, got.Len(), in)
			}
		})
	}
}

func TestParseOptionValueRejectsOver255Bytes(t *testing.T) {
	in := append([]byte{0x08}, bytes.Repeat([]byte{1}, 255)...)
	if _, err := ParseOptionValue(in); !errors.Is(err, ErrDecode) {
		t.Errorf("err = %v, want ErrDecode", err)
	}
}

func TestOptionValueAppendRejectsUnencodable(t *testing.T) {
	tests := []struct {
		name string
		v    OptionValue
	}{
		{"piv too long", OptionValue{PIV: h("010203040506")}},
		{"piv leading zero", OptionValue{PIV: h("0001")}},
		{"kid context too long", OptionValue{HasKIDContext: true, KIDContext: make([]byte, 256)}},
		{"kid without flag", OptionValue{KID: h("01")}},
		{"kid context without flag", OptionValue{KIDContext: h("01")}},
		{"option too long", OptionValue{HasKID: true, KID: make([]byte, 255)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := tt.v.Append(nil); err == nil || !strings.HasPrefix(err.Error(), "oscore: ") {
				t.Errorf("Append = %x, %v; want an oscore error", b, err)
			}
		})
	}
}

func optionValueEqual(a, b OptionValue) bool {
	return bytes.Equal(a.PIV, b.PIV) && a.HasKID == b.HasKID && bytes.Equal(a.KID, b.KID) &&
		a.HasKIDContext == b.HasKIDContext && bytes.Equal(a.KIDContext, b.KIDContext)
}

func TestPartialIVEncoding(t *testing.T) {
	for _, tt := range []struct {
		seq  uint64
		want string
	}{
		{0, "00"}, {1, "01"}, {0x14, "14"}, {0xff, "ff"}, {0x100, "0100"}, {MaxSeq, "ffffffffff"},
	} {
		if got := encodePIV(tt.seq); !bytes.Equal(got, h(tt.want)) {
			t.Errorf("encodePIV(%d) = %x, want %s", tt.seq, got, tt.want)
		}
		if got := decodePIV(h(tt.want)); got != tt.seq {
			t.Errorf("decodePIV(%s) = %d, want %d", tt.want, got, tt.seq)
		}
	}
}
