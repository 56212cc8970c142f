package mac

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

var (
	node7 = ExtendedAddrUint64(0x0200000000000007)
	node8 = ExtendedAddrUint64(0x0200000000000008)
)

// frames2015 are version 2 frames built by hand from IEEE 802.15.4-2015:
// the frame control bits of §7.2.1, the PAN ID fields of Table 7-2, the IE
// descriptors of §7.4.2.1 and §7.4.3 and the terminations of §7.4.1. The
// tshark test has an independent decoder read the same octets.
var frames2015 = []struct {
	name string
	wire string
	want Frame
}{
	{
		// FC 0xEA61: data, AR, PAN ID compression, IE present, dst short,
		// version 2, src extended. Short/extended with compression: the
		// destination PAN ID only (intra-PAN). A CSL IE (element 0x1A,
		// 4 octets: descriptor 0x0D04) and HT2 (0x3F80), then the payload:
		// what a Thread 1.2 node in CSL sends.
		name: "CSL IE and HT2 before the payload",
		wire: "61ea" + "2a" + "cefa" + "0100" + "0700000000000002" + "040d" + "10006400" + "803f" + "7a33",
		want: Frame{Type: TypeData, AckRequest: true, PANIDCompression: true, Version: Version2015, Seq: 0x2a,
			DstPAN: 0xface, Dst: ShortAddr(1), SrcPAN: 0xface, Src: node7,
			IEs: mustHex("040d10006400803f"), Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0xEF01: data, sequence number suppressed, IE present, dst
		// extended, version 2, src extended, no compression: extended/
		// extended carries the destination PAN ID only, which is the
		// source's too. HT1 (0x3F00),
		// a vendor-specific payload IE (group 2, 3 octets: 0x9003) and PT
		// (group 0xF: 0xF800), then the payload.
		name: "sequence suppressed, HT1, payload IE and PT",
		wire: "01ef" + "cefa" + "0800000000000002" + "0700000000000002" + "003f" + "0390" + "00124b" + "00f8" + "7a33",
		want: Frame{Type: TypeData, Version: Version2015, SeqSuppressed: true,
			DstPAN: 0xface, Dst: node8, SrcPAN: 0xface, Src: node7,
			IEs: mustHex("003f" + "039000124b" + "00f8"), Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0xEC41: extended/extended with compression: no PAN ID at all.
		name: "extended to extended without PAN IDs",
		wire: "41ec" + "09" + "0800000000000002" + "0700000000000002" + "7a33",
		want: Frame{Type: TypeData, PANIDCompression: true, Version: Version2015, Seq: 9,
			Dst: node8, Src: node7, Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0x2E42: an enhanced ack, dst extended only, compression: no
		// PAN ID. A Time Correction IE (0x1E, 2 octets) and no
		// termination: nothing follows, the list ends with the frame.
		name: "enhanced ack with an unterminated header IE",
		wire: "422e" + "05" + "0800000000000002" + "020f" + "0000",
		want: Frame{Type: TypeAck, PANIDCompression: true, Version: Version2015, Seq: 5,
			Dst: node8, IEs: mustHex("020f0000"), Payload: []byte{}},
	},
	{
		// FC 0x2041: no addresses, compression: the destination PAN ID
		// alone.
		name: "no addresses, destination PAN ID",
		wire: "4120" + "0b" + "ffff" + "7a33",
		want: Frame{Type: TypeData, PANIDCompression: true, Version: Version2015, Seq: 11, DstPAN: 0xffff, Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0xA001: source short only, no compression: the source PAN ID.
		name: "source only with its PAN ID",
		wire: "01a0" + "0c" + "cefa" + "0200" + "7a33",
		want: Frame{Type: TypeData, Version: Version2015, Seq: 12, SrcPAN: 0xface, Src: ShortAddr(2), Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0xA801: short/short without compression: both PAN IDs.
		name: "short to short across PANs",
		wire: "01a8" + "0d" + "cefa" + "0100" + "3412" + "0200" + "7a33",
		want: Frame{Type: TypeData, Version: Version2015, Seq: 13, DstPAN: 0xface, Dst: ShortAddr(1), SrcPAN: 0x1234, Src: ShortAddr(2), Payload: []byte{0x7a, 0x33}},
	},
	{
		// FC 0xAA41: short/short, compression, IE present: HT1, an MLME
		// payload IE (group 1) holding a nested IE, and no PT: payload IEs
		// that nothing follows.
		name: "payload IEs running to the end of the frame",
		wire: "41aa" + "0e" + "cefa" + "0100" + "0200" + "003f" + "0488" + "01020304",
		want: Frame{Type: TypeData, PANIDCompression: true, Version: Version2015, Seq: 14,
			DstPAN: 0xface, Dst: ShortAddr(1), SrcPAN: 0xface, Src: ShortAddr(2),
			IEs: mustHex("003f" + "048801020304"), Payload: []byte{}},
	},
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecode2015Frames(t *testing.T) {
	for _, tt := range frames2015 {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.wire)
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !sameFrame(got, tt.want) {
				t.Fatalf("decoded\n %+v\nwant\n %+v", got, tt.want)
			}
			if got.Len() != len(b) {
				t.Fatalf("Len %d for %d octets", got.Len(), len(b))
			}
			// The encoder writes the same octets back.
			out, err := tt.want.AppendEncode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, b) {
				t.Fatalf("encoded\n % x\nwant\n % x", out, b)
			}
		})
	}
}

// TestPANIDTable2015 pins the whole of Table 7-2: for every addressing
// combination and compression bit, which PAN ID fields are on air, and
// that the encoder and decoder agree on it.
func TestPANIDTable2015(t *testing.T) {
	modes := map[AddrMode]Addr{AddrNone: {}, AddrShort: ShortAddr(0x0102), AddrExtended: node7}
	type row struct {
		dst, src AddrMode
		comp     bool
	}
	present := func(r row) (dst, src bool) {
		switch {
		case r.dst == AddrNone && r.src == AddrNone:
			return r.comp, false
		case r.src == AddrNone: // destination only
			return !r.comp, false
		case r.dst == AddrNone: // source only
			return false, !r.comp
		case r.dst == AddrExtended && r.src == AddrExtended:
			return !r.comp, false
		}
		return true, !r.comp
	}
	rows := 0
	for _, dm := range []AddrMode{AddrNone, AddrShort, AddrExtended} {
		for _, sm := range []AddrMode{AddrNone, AddrShort, AddrExtended} {
			for _, comp := range []bool{false, true} {
				r := row{dm, sm, comp}
				rows++
				f := Frame{Type: TypeData, Version: Version2015, PANIDCompression: comp,
					DstPAN: 0xabcd, Dst: modes[dm], SrcPAN: 0x1234, Src: modes[sm], Payload: []byte{0x55}}
				wantDst, wantSrc := present(r)
				if f.HasDstPAN() != wantDst || f.HasSrcPAN() != wantSrc {
					t.Errorf("%+v: HasDstPAN %v HasSrcPAN %v, want %v %v", r, f.HasDstPAN(), f.HasSrcPAN(), wantDst, wantSrc)
				}
				b, err := f.AppendEncode(nil)
				if err != nil {
					t.Errorf("%+v: %v", r, err)
					continue
				}
				wantLen := 3 + dm.Len() + sm.Len() + 1
				if wantDst {
					wantLen += 2
				}
				if wantSrc {
					wantLen += 2
				}
				if len(b) != wantLen {
					t.Errorf("%+v: %d octets, want %d", r, len(b), wantLen)
				}
				got, err := Decode(b)
				if err != nil {
					t.Errorf("%+v: decode: %v", r, err)
					continue
				}
				var wantDstPAN, wantSrcPAN uint16
				if wantDst {
					wantDstPAN = 0xabcd
				}
				switch {
				case wantSrc:
					wantSrcPAN = 0x1234
				case wantDst && sm != AddrNone:
					wantSrcPAN = 0xabcd // intra-PAN
				}
				if got.DstPAN != wantDstPAN || got.SrcPAN != wantSrcPAN || got.Dst != f.Dst || got.Src != f.Src {
					t.Errorf("%+v: decoded PANs %#04x %#04x addrs %v %v", r, got.DstPAN, got.SrcPAN, got.Dst, got.Src)
				}
			}
		}
	}
	if rows != 18 {
		t.Fatalf("%d rows", rows)
	}
}

func TestParseIEs(t *testing.T) {
	ies, err := ParseIEs(unhex(t, "040d10006400"+"003f"+"039000124b"+"00f8"))
	if err != nil {
		t.Fatal(err)
	}
	want := []IE{
		{ID: 0x1a, Content: unhex(t, "10006400")},
		{ID: IEHT1, Content: []byte{}},
		{Payload: true, ID: 2, Content: unhex(t, "00124b")},
		{Payload: true, ID: IEPT, Content: []byte{}},
	}
	if len(ies) != len(want) {
		t.Fatalf("%d IEs: %+v", len(ies), ies)
	}
	for i := range want {
		if ies[i].Payload != want[i].Payload || ies[i].ID != want[i].ID || !bytes.Equal(ies[i].Content, want[i].Content) {
			t.Errorf("IE %d = %+v, want %+v", i, ies[i], want[i])
		}
	}
	if _, err := ParseIEs(unhex(t, "803f01")); !errors.Is(err, ErrMalformed) {
		t.Errorf("octets after HT2: %v", err)
	}
	if _, err := ParseIEs(unhex(t, "040d10")); !errors.Is(err, ErrTruncated) {
		t.Errorf("cut IE: %v", err)
	}
}

func TestAppendIEsBuildsWhatTheStandardLaysOut(t *testing.T) {
	b, err := AppendHeaderIE(nil, 0x1a, unhex(t, "10006400"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = AppendHeaderIE(b, IEHT1, nil)
	b, _ = AppendPayloadIE(b, 2, unhex(t, "00124b"))
	b, _ = AppendPayloadIE(b, IEPT, nil)
	if want := unhex(t, "040d10006400"+"003f"+"039000124b"+"00f8"); !bytes.Equal(b, want) {
		t.Fatalf("built % x, want % x", b, want)
	}
	if _, err := AppendHeaderIE(nil, 1, make([]byte, 128)); !errors.Is(err, ErrTooLong) {
		t.Errorf("128-octet header IE: %v", err)
	}
	if _, err := AppendPayloadIE(nil, 16, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("group 16: %v", err)
	}
	if _, err := AppendPayloadIE(nil, 1, make([]byte, 2048)); !errors.Is(err, ErrTooLong) {
		t.Errorf("2048-octet payload IE: %v", err)
	}
}

func TestMaxPayloadCountsIEs(t *testing.T) {
	f := Frame{Type: TypeData, Version: Version2015, SeqSuppressed: true, PANIDCompression: true,
		Dst: node8, Src: node7, IEs: unhex(t, "040d10006400803f")}
	// 2 FC + 16 addresses + 8 IEs, no sequence number, no PAN ID.
	if got := f.MaxPayload(); got != MaxMPDU-26 {
		t.Fatalf("MaxPayload %d, want %d", got, MaxMPDU-26)
	}
	f.Payload = make([]byte, f.MaxPayload())
	if _, err := f.AppendEncode(nil); err != nil {
		t.Fatalf("a payload of MaxPayload: %v", err)
	}
	f.Payload = append(f.Payload, 0)
	if _, err := f.AppendEncode(nil); !errors.Is(err, ErrTooLong) {
		t.Fatalf("one more octet: %v", err)
	}
}
