package mac

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// coapWellKnown is a 6LoWPAN payload: IPHC 0x7E77 (RFC 6282 §3.1.1:
// traffic class and flow label elided, next header compressed, hop limit
// 64, both addresses context 0 plus the IID of the MAC address), NHC UDP
// (§4.3.3) with both ports 5683 inline, and a CoAP GET of
// /.well-known/core. Where a decoder puts the start of the payload and
// which MAC addresses it reads both show in the IPv6 addresses and the
// CoAP path it finds.
const coapWellKnown = "7e77" + "f0" + "16331633" + "0000" + "40011234" + "bb2e77656c6c2d6b6e6f776e" + "04636f7265"

// tsharkContext is context 0 for the IPHC payloads above.
var tsharkContext = netip.MustParsePrefix("fd00:db8:1::/64")

// TestTsharkAgreesOn2015Frames has tshark, an independent 802.15.4
// decoder, read the version 2 frames of frames2015 and more carrying
// 6LoWPAN and CoAP, and compares every header field, the IEs, and where
// the payload starts with what Decode makes of the same octets.
func TestTsharkAgreesOn2015Frames(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark not installed (Debian package tshark): run scripts/test-deps.sh")
	}
	var frames []Frame
	var wires [][]byte
	for _, v := range frames2015 {
		b := mustHex(v.wire)
		f, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		frames, wires = append(frames, f), append(wires, b)
	}
	payload := mustHex(coapWellKnown)
	csl := mustHex("040d" + "10006400" + "803f")
	withPayloadIE := mustHex("003f" + "039000124b" + "00f8")
	for _, f := range []Frame{
		{Type: TypeData, AckRequest: true, PANIDCompression: true, Version: Version2015, Seq: 0x21,
			DstPAN: 0xface, Dst: node8, Src: node7, IEs: csl, Payload: payload},
		{Type: TypeData, PANIDCompression: true, Version: Version2015, SeqSuppressed: true,
			Dst: node8, Src: node7, IEs: withPayloadIE, Payload: payload},
		{Type: TypeData, Version: Version2015, Seq: 0x22, DstPAN: 0xface, Dst: ShortAddr(0x0001),
			SrcPAN: 0xbeef, Src: ShortAddr(0x0042), IEs: csl, Payload: payload},
		{Type: TypeData, PANIDCompression: true, Version: Version2015, Seq: 0x23,
			DstPAN: 0xface, Dst: ShortAddr(0x0001), Src: node7, Payload: payload},
	} {
		b, err := f.AppendEncode(nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		frames, wires = append(frames, d), append(wires, b)
	}

	path := filepath.Join(t.TempDir(), "v2.pcap")
	writeCapture(t, path, wires)
	fields := []string{
		"wpan.frame_type", "wpan.version", "wpan.seqno_suppression", "wpan.ie_present", "wpan.pan_id_compression",
		"wpan.seq_no", "wpan.dst_pan", "wpan.dst16", "wpan.dst64", "wpan.src_pan", "wpan.src16", "wpan.src64",
		"wpan.header_ie.id", "wpan.payload_ie.id", "ipv6.src", "ipv6.dst", "coap.opt.uri_path",
	}
	args := []string{"-r", path, "-o", "6lowpan.context0:" + tsharkContext.String(), "-d", "udp.port==5683,coap",
		"-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user preferences
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.Bytes())
	}
	rows := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(rows) != len(frames) {
		t.Fatalf("tshark printed %d rows for %d frames:\n%s", len(rows), len(frames), out)
	}
	for i, f := range frames {
		got := strings.Split(rows[i], "|")
		want := tsharkView(t, &f)
		if len(got) != len(want) {
			t.Fatalf("frame %d: %d fields from tshark: %q", i, len(got), rows[i])
		}
		for j := range want {
			if got[j] != want[j] {
				t.Errorf("frame %d (% x): %s: tshark %q, Decode %q", i, wires[i], fields[j], got[j], want[j])
			}
		}
	}
	t.Logf("tshark read %d version 2 frames as Decode does:\n%s", len(rows), out)
}

// tsharkView prints f's fields the way tshark prints the fields the test
// asks for.
func tsharkView(t *testing.T, f *Frame) []string {
	t.Helper()
	bit := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	v := []string{
		fmt.Sprintf("0x%04x", uint8(f.Type)), fmt.Sprint(f.Version), bit(f.SeqSuppressed), bit(len(f.IEs) > 0), bit(f.PANIDCompression),
	}
	if f.SeqSuppressed {
		v = append(v, "")
	} else {
		v = append(v, fmt.Sprint(f.Seq))
	}
	pan := func(present bool, id uint16) string {
		if !present {
			return ""
		}
		return fmt.Sprintf("0x%04x", id)
	}
	addr := func(a Addr) (short, ext string) {
		if s, ok := a.Short(); ok {
			short = fmt.Sprintf("0x%04x", s)
		}
		if _, ok := a.Extended(); ok {
			ext = a.String()
		}
		return short, ext
	}
	ds, de := addr(f.Dst)
	ss, se := addr(f.Src)
	v = append(v, pan(f.HasDstPAN(), f.DstPAN), ds, de, pan(f.HasSrcPAN(), f.SrcPAN), ss, se)
	var hie, pie []string
	if len(f.IEs) > 0 {
		ies, err := ParseIEs(f.IEs)
		if err != nil {
			t.Fatal(err)
		}
		for _, ie := range ies {
			if ie.Payload {
				pie = append(pie, fmt.Sprintf("0x%04x", ie.ID))
			} else {
				hie = append(hie, fmt.Sprintf("0x%04x", ie.ID))
			}
		}
	}
	v = append(v, strings.Join(hie, ","), strings.Join(pie, ","))
	if !bytes.Equal(f.Payload, mustHex(coapWellKnown)) {
		return append(v, "", "", "")
	}
	ip := func(a Addr) string {
		iid, _ := a.IID()
		b := tsharkContext.Addr().As16()
		copy(b[8:], iid[:])
		return netip.AddrFrom16(b).String()
	}
	return append(v, ip(f.Src), ip(f.Dst), ".well-known,core")
}

// writeCapture writes MPDUs as a libpcap file of LINKTYPE 195 (802.15.4
// with FCS). radio/pcap does this for the daemon; it imports this package,
// so this test writes its own.
func writeCapture(t *testing.T, path string, mpdus [][]byte) {
	t.Helper()
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...) // thiszone, sigfigs
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 195)
	for i, m := range mpdus {
		psdu := AppendFCS(bytes.Clone(m))
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(psdu)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(psdu)))
		b = append(b, psdu...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
