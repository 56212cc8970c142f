package mac

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFCSVectors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"empty", nil, 0x0000},
		// The check value of the CRC catalogue's CRC-16/KERMIT entry.
		{"crc catalogue check 123456789", []byte("123456789"), 0x2189},
		// IEEE 802.15.4-2006 §7.2.1.9 worked example: an ack frame with
		// sequence number 0x56 written MSB-first as 0x6A on air is 02 00 6A,
		// whose FCS bits 0010 0111 1001 1110 are octets E4 79.
		{"802.15.4 ack example", []byte{0x02, 0x00, 0x6a}, 0x79e4},
		{"single zero", []byte{0}, 0x0000},
		{"single 0x01", []byte{1}, 0x1189},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FCS(tt.in); got != tt.want {
				t.Fatalf("FCS(% x) = %04x, want %04x", tt.in, got, tt.want)
			}
			psdu := AppendFCS(append([]byte(nil), tt.in...))
			if !CheckFCS(psdu) {
				t.Fatalf("CheckFCS(AppendFCS(x)) = false")
			}
			psdu[len(psdu)-1] ^= 1
			if CheckFCS(psdu) {
				t.Fatalf("CheckFCS accepted a corrupted FCS")
			}
		})
	}
	if CheckFCS([]byte{1}) {
		t.Fatal("CheckFCS accepted a 1-octet PSDU")
	}
}

func TestAppendFCSLowOctetFirst(t *testing.T) {
	got := AppendFCS([]byte{0x02, 0x00, 0x6a})
	if want := []byte{0x02, 0x00, 0x6a, 0xe4, 0x79}; !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

var ext = ExtendedAddrUint64(0x0011223344556677)

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		wire string // hex of the expected MPDU, if pinned
	}{
		{
			name: "data short to short intra-PAN",
			f: Frame{Type: TypeData, AckRequest: true, PANIDCompression: true, Version: Version2003, Seq: 0x42,
				DstPAN: 0xabcd, Dst: ShortAddr(0x0001), SrcPAN: 0xabcd, Src: ShortAddr(0x0002), Payload: []byte{0x7a, 0x33}},
			// FC 0x8861: data, ack request, PAN ID compression, short/short.
			wire: "6188" + "42" + "cdab" + "0100" + "0200" + "7a33",
		},
		{
			name: "data extended to extended, 2006, extended on air reversed",
			f: Frame{Type: TypeData, PANIDCompression: true, Version: Version2006, Seq: 1,
				DstPAN: 0x1234, Dst: ext, SrcPAN: 0x1234, Src: ExtendedAddrUint64(0x8899aabbccddeeff)},
			wire: "41dc" + "01" + "3412" + "7766554433221100" + "ffeeddccbbaa9988",
		},
		{
			name: "broadcast short from extended",
			f: Frame{Type: TypeData, PANIDCompression: true, Seq: 9, DstPAN: 0xabcd, Dst: Broadcast,
				SrcPAN: 0xabcd, Src: ext, Payload: []byte("x")},
			wire: "41c8" + "09" + "cdab" + "ffff" + "7766554433221100" + "78",
		},
		{
			name: "inter-PAN without compression",
			f:    Frame{Type: TypeData, Seq: 3, DstPAN: 0x0001, Dst: ShortAddr(0x0203), SrcPAN: 0x0004, Src: ShortAddr(0x0506)},
			wire: "0188" + "03" + "0100" + "0302" + "0400" + "0605",
		},
		{
			name: "ack",
			f:    Frame{Type: TypeAck, Seq: 0x56},
			wire: "0200" + "56",
		},
		{
			name: "source only",
			f:    Frame{Type: TypeCommand, Seq: 7, SrcPAN: 0xffff, Src: ext, Payload: []byte{0x07}},
		},
		{
			name: "destination only with pending",
			f:    Frame{Type: TypeData, FramePending: true, Seq: 8, DstPAN: 0xabcd, Dst: ShortAddr(0), Payload: []byte{1, 2, 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.f.AppendEncode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.f.Len() {
				t.Fatalf("encoded %d octets, Len says %d", len(b), tt.f.Len())
			}
			if tt.wire != "" {
				if want := unhex(t, tt.wire); !bytes.Equal(b, want) {
					t.Fatalf("encoded\n % x\nwant\n % x", b, want)
				}
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.f
			if want.PANIDCompression {
				want.SrcPAN = want.DstPAN
			}
			if !sameFrame(got, want) {
				t.Fatalf("decoded %+v\nwant %+v", got, want)
			}
			buf := make([]byte, MaxMPDU)
			n, err := tt.f.MarshalTo(buf)
			if err != nil || !bytes.Equal(buf[:n], b) {
				t.Fatalf("MarshalTo = % x, %v; AppendEncode = % x", buf[:n], err, b)
			}
		})
	}
}

func sameFrame(a, b Frame) bool {
	return a.Type == b.Type && a.Security == b.Security && a.FramePending == b.FramePending &&
		a.AckRequest == b.AckRequest && a.PANIDCompression == b.PANIDCompression &&
		a.Version == b.Version && a.SeqSuppressed == b.SeqSuppressed && a.Seq == b.Seq &&
		a.DstPAN == b.DstPAN && a.Dst == b.Dst && a.SrcPAN == b.SrcPAN && a.Src == b.Src &&
		bytes.Equal(a.IEs, b.IEs) && bytes.Equal(a.Payload, b.Payload)
}

func TestDecodeAliasesInput(t *testing.T) {
	b := unhex(t, "6188"+"42"+"cdab"+"0100"+"0200"+"7a33")
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] = 0xee
	if f.Payload[1] != 0xee {
		t.Fatal("Payload does not alias the input")
	}
	// An append to Payload must not write over bytes beyond the frame.
	if cap(f.Payload) != len(f.Payload) {
		t.Fatalf("Payload capacity %d exceeds its length %d", cap(f.Payload), len(f.Payload))
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrTruncated},
		{"two octets", "4188", ErrTruncated},
		{"short header", "6188" + "42" + "cdab" + "01", ErrTruncated},
		{"security enabled", "6988" + "42" + "cdab" + "0100" + "0200", ErrUnsupported},
		{"security enabled 2015", "69a8" + "42" + "cdab" + "0100" + "0200", ErrSecured},
		{"reserved version 3", "61b8" + "42" + "cdab" + "0100" + "0200", ErrUnsupported},
		{"2015 short header", "41a8" + "42" + "cdab" + "0100" + "02", ErrTruncated},
		{"2015 seq suppressed, header cut", "41a9" + "cdab" + "0100" + "02", ErrTruncated},
		{"2015 IE present, no IEs", "41aa" + "42" + "cdab" + "0100" + "0200", ErrMalformed},
		{"2015 IE descriptor cut", "41aa" + "42" + "cdab" + "0100" + "0200" + "80", ErrTruncated},
		{"2015 header IE content overruns", "41aa" + "42" + "cdab" + "0100" + "0200" + "040d" + "1000", ErrTruncated},
		{"2015 payload IE without HT1", "41aa" + "42" + "cdab" + "0100" + "0200" + "00f8", ErrMalformed},
		{"2015 header IE after HT1", "41aa" + "42" + "cdab" + "0100" + "0200" + "003f" + "803f", ErrMalformed},
		{"2015 payload IE content overruns", "41aa" + "42" + "cdab" + "0100" + "0200" + "003f" + "0590" + "0102", ErrTruncated},
		{"reserved dst mode", "6184" + "42" + "cdab" + "0100" + "0200", ErrMalformed},
		{"reserved frame type", "0500" + "01", ErrUnsupported},
		{"compression without dst", "4180" + "42" + "cdab" + "0200", ErrMalformed},
		{"too long", "4188" + "42" + hexRepeat("00", MaxMPDU), ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(unhex(t, tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func hexRepeat(s string, n int) string { return string(bytes.Repeat([]byte(s), n)) }

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want error
	}{
		{"payload too long", Frame{Type: TypeData, Dst: Broadcast, Payload: make([]byte, MaxMPDU)}, ErrTooLong},
		{"security", Frame{Type: TypeData, Security: true}, ErrUnsupported},
		{"compression without src", Frame{Type: TypeData, PANIDCompression: true, Dst: Broadcast}, ErrMalformed},
		{"version 3", Frame{Type: TypeData, Version: 3}, ErrUnsupported},
		{"IEs in a 2006 frame", Frame{Type: TypeData, Version: Version2006, IEs: []byte{0x80, 0x3f}}, ErrMalformed},
		{"sequence suppression in a 2006 frame", Frame{Type: TypeData, Version: Version2006, SeqSuppressed: true}, ErrMalformed},
		{"payload after an unterminated header IE list", Frame{Type: TypeData, Version: Version2015, IEs: unhex(t, "040d10006400"), Payload: []byte{1}}, ErrMalformed},
		{"payload after payload IEs without PT", Frame{Type: TypeData, Version: Version2015, IEs: unhex(t, "003f"+"039000124b"), Payload: []byte{1}}, ErrMalformed},
		{"octets after HT2", Frame{Type: TypeData, Version: Version2015, IEs: unhex(t, "803f"+"0102")}, ErrMalformed},
		{"IE list cut", Frame{Type: TypeData, Version: Version2015, IEs: unhex(t, "040d1000")}, ErrTruncated},
		{"too long with IEs", Frame{Type: TypeData, Version: Version2015, IEs: unhex(t, "803f"), Payload: make([]byte, MaxMPDU-3)}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.f.AppendEncode([]byte{9})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if len(b) != 1 {
				t.Fatalf("failed encode changed the buffer to % x", b)
			}
		})
	}
	if _, err := (&Frame{Type: TypeAck}).MarshalTo(make([]byte, 2)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("MarshalTo into a short buffer: %v", err)
	}
}

func TestHeaderLen(t *testing.T) {
	tests := []struct {
		name     string
		dst, src AddrMode
		comp     bool
		want     int
	}{
		{"ack", AddrNone, AddrNone, false, 3},
		{"short short intra-PAN", AddrShort, AddrShort, true, 9},
		{"short short inter-PAN", AddrShort, AddrShort, false, 11},
		{"short extended intra-PAN", AddrShort, AddrExtended, true, 15},
		{"extended extended intra-PAN", AddrExtended, AddrExtended, true, 21},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HeaderLen(tt.dst, tt.src, tt.comp); got != tt.want {
				t.Fatalf("HeaderLen = %d, want %d", got, tt.want)
			}
			if got := MaxPayload(tt.dst, tt.src, tt.comp); got != MaxMPDU-tt.want {
				t.Fatalf("MaxPayload = %d", got)
			}
		})
	}
}

func TestAddrIID(t *testing.T) {
	tests := []struct {
		name string
		a    Addr
		iid  string
	}{
		{"short", ShortAddr(0x1234), "000000fffe001234"},
		{"extended flips U/L bit", ext, "0211223344556677"},
		{"extended local", ExtendedAddrUint64(0x0211223344556677), "0011223344556677"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iid, ok := tt.a.IID()
			if !ok || hex.EncodeToString(iid[:]) != tt.iid {
				t.Fatalf("IID = %x, %v; want %s", iid, ok, tt.iid)
			}
			if back := AddrFromIID(iid); back != tt.a {
				t.Fatalf("AddrFromIID = %v, want %v", back, tt.a)
			}
		})
	}
	if _, ok := (Addr{}).IID(); ok {
		t.Fatal("no address has an IID")
	}
	if s := ext.String(); s != "00:11:22:33:44:55:66:77" {
		t.Fatal(s)
	}
	if s := ShortAddr(0xbeef).String(); s != "0xbeef" {
		t.Fatal(s)
	}
}

// seedFrames are real frames: the encodings pinned in TestEncodeDecode,
// a 6LoWPAN IPHC/NHC-UDP CoAP GET as the gateway sends it, and (in
// FuzzDecode) the version 2 frames of frames2015.
var seedFrames = []string{
	"6188" + "42" + "cdab" + "0100" + "0200" + "7a33",
	"41dc" + "01" + "3412" + "7766554433221100" + "ffeeddccbbaa9988",
	"41c8" + "09" + "cdab" + "ffff" + "7766554433221100" + "78",
	"0200" + "56",
	"6188" + "01" + "cdab" + "0200" + "0100" + "7b3bf0163316330000" + "4201000147b42e77656c6c2d6b6e6f776e04636f7265",
}

func FuzzDecode(f *testing.F) {
	for _, s := range seedFrames {
		f.Add(unhex(f, s))
	}
	for _, v := range frames2015 {
		f.Add(unhex(f, v.wire))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			return
		}
		// Round trip: a decoded frame re-encodes to the same octets, except
		// the reserved frame control bits, which are not kept: bit 7, and in
		// versions 0 and 1 bits 8 and 9 too.
		out, err := fr.AppendEncode(nil)
		if err != nil {
			t.Fatalf("re-encode of a decoded frame: %v", err)
		}
		want := append([]byte(nil), b...)
		want[0] &^= 0x80
		if fr.Version < Version2015 {
			want[1] &^= 0x03
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("re-encoded\n % x\nfrom\n % x", out, b)
		}
		again, err := Decode(out)
		if err != nil || !sameFrame(again, fr) {
			t.Fatalf("decode(encode(f)) = %+v, %v; want %+v", again, err, fr)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	frame := unhex(b, seedFrames[4])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	fr, _ := Decode(unhex(b, seedFrames[4]))
	buf := make([]byte, 0, MaxMPDU)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.AppendEncode(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseAddrRoundTrips(t *testing.T) {
	for _, a := range []Addr{ShortAddr(0x0042), ShortAddr(0xffff), ExtendedAddrUint64(0x00124b0000000042), ExtendedAddrUint64(0x18b4300000000001)} {
		txt, _ := a.MarshalText()
		var b Addr
		if err := b.UnmarshalText(txt); err != nil || b != a {
			t.Fatalf("%v → %q → %v, %v", a, txt, b, err)
		}
	}
	if a, err := ParseAddr("00124b0000000042"); err != nil || a != ExtendedAddrUint64(0x00124b0000000042) {
		t.Fatalf("16 hex digits: %v %v", a, err)
	}
	if a, err := ParseAddr("00-12-4b-00-00-00-00-42"); err != nil || a != ExtendedAddrUint64(0x00124b0000000042) {
		t.Fatalf("dashes: %v %v", a, err)
	}
	for _, bad := range []string{"", "0x", "0x12345", "0xgg", "00:12:4b", "00:12:4b:00:00:00:00:4g", "00:12:4b:00.00:00:00:42", "+0124b0000000042"} {
		if _, err := ParseAddr(bad); !errors.Is(err, ErrAddrSyntax) {
			t.Errorf("ParseAddr(%q): %v", bad, err)
		}
	}
	var z Addr
	if err := z.UnmarshalText(nil); err != nil || z.IsValid() {
		t.Fatalf("empty: %v %v", z, err)
	}
}
