package sixlowpan

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

var (
	prefix   = netip.MustParsePrefix("2001:db8:1:2::/64")
	extA     = mac.ExtendedAddrUint64(0x0012_4b00_0001_0203)
	extB     = mac.ExtendedAddrUint64(0x0012_4b00_0004_0506)
	shortA   = mac.ShortAddr(0x0001)
	shortB   = mac.ShortAddr(0xbeef)
	coapGET  = mustHex("4401a1b2c3d4e5f6b4746573740a68756d6964697479") // CON GET, 4-byte token, /test/humidity
	coapPort = uint16(5683)
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// addrFor returns the address in p whose IID derives from ll.
func addrFor(p netip.Prefix, ll mac.Addr) netip.Addr {
	a := p.Addr().As16()
	iid, _ := ll.IID()
	copy(a[8:], iid[:])
	return netip.AddrFrom16(a)
}

var linkLocal = netip.MustParsePrefix("fe80::/64")

func udpPacket(t testing.TB, src, dst netip.Addr, sp, dp uint16, payload []byte) []byte {
	t.Helper()
	pkt, err := AppendUDP(nil, netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp), 0, payload)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// rawPacket builds an IPv6 packet with arbitrary header fields.
func rawPacket(tc uint8, fl uint32, nh, hl uint8, src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, IPv6HeaderLen, IPv6HeaderLen+len(payload))
	p[0] = 0x60 | tc>>4
	p[1] = tc<<4 | byte(fl>>16&0x0f)
	p[2], p[3] = byte(fl>>8), byte(fl)
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = nh, hl
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, payload...)
}

// TestCompressKnownEncodings pins encodings worked out by hand from RFC
// 6282 §3.1.1 and §4.3.3.
func TestCompressKnownEncodings(t *testing.T) {
	c := NewCodec(prefix)
	tests := []struct {
		name     string
		pkt      []byte
		src, dst mac.Addr
		want     string // compressed headers, checksum excluded
	}{
		{
			// TF=11 NH=1 HLIM=10 | CID=0 SAC=0 SAM=11 M=0 DAC=0 DAM=11;
			// NHC 11110 C=0 P=11 with ports 0xF0B1, 0xF0B2.
			name: "link-local both from extended, 4-bit ports",
			pkt:  udpPacket(t, addrFor(linkLocal, extA), addrFor(linkLocal, extB), 0xf0b1, 0xf0b2, []byte("hi")),
			src:  extA, dst: extB,
			want: "7e33" + "f312",
		},
		{
			// SAC=1 SAM=11 DAC=1 DAM=11 on context 0; ports in full.
			name: "prefix both from short, CoAP ports",
			pkt:  udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), coapPort, coapPort, coapGET),
			src:  shortA, dst: shortB,
			want: "7e77" + "f0" + "16331633",
		},
		{
			// Short-form IID that does not match the MAC: SAM=10 in-line 16 bits.
			name: "link-local 16-bit not from the frame",
			pkt:  udpPacket(t, addrFor(linkLocal, mac.ShortAddr(0x0042)), addrFor(linkLocal, extB), 0xf012, 5683, nil),
			src:  extA, dst: extB,
			want: "7e23" + "0042" + "f2" + "12" + "1633",
		},
		{
			// M=1 DAC=0 DAM=11: ff02::1 in one octet; dst port 0xF0xx.
			name: "all-nodes multicast",
			pkt:  udpPacket(t, addrFor(linkLocal, extA), netip.MustParseAddr("ff02::1"), 5683, 0xf005, nil),
			src:  extA, dst: mac.Broadcast,
			want: "7e3b" + "01" + "f1" + "1633" + "05",
		},
		{
			// TF=00 with DSCP, ECN and flow label; hop limit in-line; next
			// header in-line (not UDP); full addresses.
			name: "nothing compressible",
			pkt:  rawPacket(0xb9, 0xabcde, 58, 7, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:9::2"), []byte{1, 2}),
			src:  extA, dst: extB,
			want: "6000" + "6e" + "0abcde" + "3a" + "07" + "20010db8000000000000000000000001" + "20010db8000900000000000000000002",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := c.AppendCompressed(nil, tt.pkt, tt.src, tt.dst)
			if err != nil {
				t.Fatal(err)
			}
			want := mustHex(tt.want)
			if tt.pkt[6] == protoUDP {
				want = append(want, tt.pkt[46], tt.pkt[47])
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("compressed\n % x\nwant\n % x", got, want)
			}
			back, m, err := c.AppendDecompressed(nil, append(got, tt.pkt[n:]...), tt.src, tt.dst, 0)
			if err != nil || m != len(got) {
				t.Fatalf("decompress: consumed %d of %d, %v", m, len(got), err)
			}
			if !bytes.Equal(append(back, tt.pkt[n:]...), tt.pkt) {
				t.Fatalf("round trip\n % x\nwant\n % x", back, tt.pkt[:n])
			}
		})
	}
}

// TestIPHCModes round-trips packets chosen to select each TF, HLIM, SAM,
// DAM, SAC, DAC, M and CID mode, and checks the mode chosen.
func TestIPHCModes(t *testing.T) {
	c := NewCodec(prefix)
	c.Contexts[3] = netip.MustParsePrefix("2001:db8:aaaa::/48")
	c.Contexts[5] = netip.MustParsePrefix("2001:db8:bbbb:cccc:dddd::/80")
	ll := addrFor(linkLocal, extA)
	pfx := addrFor(prefix, extB)
	p := netip.MustParseAddr
	tests := []struct {
		name     string
		tc       uint8
		fl       uint32
		hl       uint8
		src, dst netip.Addr
		field    string // "tf", "hlim", "sam", "dam", "cid"
		want     uint16 // value of that field (SAM/DAM include SAC/DAC and M as 0b_M_AC_MM)
	}{
		{"TF=00 DSCP and flow", 0xb8, 0x12345, 64, ll, pfx, "tf", 0},
		{"TF=01 ECN and flow", 0x01, 0xfffff, 64, ll, pfx, "tf", 1},
		{"TF=10 DSCP and ECN", 0xb9, 0, 64, ll, pfx, "tf", 2},
		{"TF=11 elided", 0, 0, 64, ll, pfx, "tf", 3},
		{"HLIM in-line", 0, 0, 17, ll, pfx, "hlim", 0},
		{"HLIM 1", 0, 0, 1, ll, pfx, "hlim", 1},
		{"HLIM 64", 0, 0, 64, ll, pfx, "hlim", 2},
		{"HLIM 255", 0, 0, 255, ll, pfx, "hlim", 3},
		{"SAM stateless 128", 0, 0, 64, p("2001:db8:ffff::1"), pfx, "sam", 0b000},
		{"SAM stateless 64", 0, 0, 64, p("fe80::1234:5678:9abc:def0"), pfx, "sam", 0b001},
		{"SAM stateless 16", 0, 0, 64, p("fe80::ff:fe00:42"), pfx, "sam", 0b010},
		{"SAM stateless 0", 0, 0, 64, ll, pfx, "sam", 0b011},
		{"SAM unspecified", 0, 0, 64, p("::"), pfx, "sam", 0b100},
		{"SAM context 64", 0, 0, 64, p("2001:db8:1:2:1234:5678:9abc:def0"), pfx, "sam", 0b101},
		{"SAM context 16", 0, 0, 64, p("2001:db8:1:2:0:ff:fe00:42"), pfx, "sam", 0b110},
		{"SAM context 0", 0, 0, 64, addrFor(prefix, extA), pfx, "sam", 0b111},
		{"SAM context 3 short prefix", 0, 0, 64, p("2001:db8:aaaa:0:0:ff:fe00:42"), pfx, "sam", 0b110},
		{"SAM context 5 long prefix", 0, 0, 64, p("2001:db8:bbbb:cccc:dddd:ff:fe00:42"), pfx, "sam", 0b110},
		{"DAM stateless 128", 0, 0, 64, ll, p("2001:db8:ffff::1"), "dam", 0b000},
		{"DAM stateless 64", 0, 0, 64, ll, p("fe80::1234:5678:9abc:def0"), "dam", 0b001},
		{"DAM stateless 16", 0, 0, 64, ll, p("fe80::ff:fe00:42"), "dam", 0b010},
		{"DAM stateless 0", 0, 0, 64, ll, addrFor(linkLocal, extB), "dam", 0b011},
		{"DAM context 64", 0, 0, 64, ll, p("2001:db8:1:2:1234:5678:9abc:def0"), "dam", 0b101},
		{"DAM context 16", 0, 0, 64, ll, p("2001:db8:1:2:0:ff:fe00:42"), "dam", 0b110},
		{"DAM context 0", 0, 0, 64, ll, pfx, "dam", 0b111},
		{"DAM multicast 128", 0, 0, 64, ll, p("ff05::1:2:3:4:5"), "dam", 0b1000},
		{"DAM multicast 48", 0, 0, 64, ll, p("ff05::12:3456:789a"), "dam", 0b1001},
		{"DAM multicast 32", 0, 0, 64, ll, p("ff05::12:3456"), "dam", 0b1010},
		{"DAM multicast 8", 0, 0, 64, ll, p("ff02::fd"), "dam", 0b1011},
		{"DAM multicast unicast-prefix-based", 0, 0, 64, ll, p("ff35:0040:2001:db8:1:2:1234:5678"), "dam", 0b1100},
		{"CID used for context 3", 0, 0, 64, p("2001:db8:aaaa::ff:fe00:42"), p("2001:db8:bbbb:cccc:dddd:ff:fe00:43"), "cid", 0x35},
		{"CID absent for context 0", 0, 0, 64, addrFor(prefix, extA), pfx, "cid", 0x100},
	}
	for _, tt := range tests {
		for _, udp := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/udp=%v", tt.name, udp), func(t *testing.T) {
				var pkt []byte
				if udp {
					pkt = udpPacket(t, tt.src, tt.dst, 61617, 5683, []byte("payload"))
					pkt[0] = 0x60 | tt.tc>>4
					pkt[1] = tt.tc<<4 | byte(tt.fl>>16)
					pkt[2], pkt[3] = byte(tt.fl>>8), byte(tt.fl)
					pkt[7] = tt.hl
				} else {
					pkt = rawPacket(tt.tc, tt.fl, 59, tt.hl, tt.src, tt.dst, []byte("no next header"))
				}
				comp, n, err := c.AppendCompressed(nil, pkt, extA, extB)
				if err != nil {
					t.Fatal(err)
				}
				iphc := binary.BigEndian.Uint16(comp)
				var got uint16
				switch tt.field {
				case "tf":
					got = iphc >> 11 & 3
				case "hlim":
					got = iphc >> 8 & 3
				case "sam":
					got = iphc >> 4 & 7
				case "dam":
					got = iphc & 0xf
				case "cid":
					got = 0x100
					if iphc&iphcCID != 0 {
						got = uint16(comp[2])
					}
				}
				if got != tt.want {
					t.Fatalf("%s = %#b, want %#b (IPHC %04x)", tt.field, got, tt.want, iphc)
				}
				frame := append(comp, pkt[n:]...)
				back, m, err := c.AppendDecompressed(nil, frame, extA, extB, 0)
				if err != nil {
					t.Fatal(err)
				}
				if back = append(back, frame[m:]...); !bytes.Equal(back, pkt) {
					t.Fatalf("round trip\n % x\nwant\n % x", back, pkt)
				}
			})
		}
	}
}

// TestDecompressAllIPHCCombinations decodes every 13-bit IPHC value with
// enough in-line octets after it: none may panic, and every one that
// decodes must survive the decode→encode→decode property.
func TestDecompressAllIPHCCombinations(t *testing.T) {
	c := NewCodec(prefix)
	c.Contexts[1] = netip.MustParsePrefix("2001:db8:77::/48")
	inline := bytes.Repeat([]byte{0x11, 0xf0, 0x93, 0x5a}, 16)
	inline[0] = 0x01 // CID byte: source context 0, destination context 1
	decoded := 0
	for v := range 1 << 13 {
		for _, nhc := range []byte{0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xe0} {
			b := append([]byte{DispatchIPHC | byte(v>>8), byte(v)}, inline...)
			// place a NHC octet where the in-line fields end, found by trial
			pkt, ok := decodeWithNHC(c, b, nhc)
			if !ok {
				continue
			}
			decoded++
			checkReencode(t, c, pkt, extA, extB)
		}
	}
	if decoded < 1<<12 {
		t.Fatalf("only %d combinations decoded", decoded)
	}
}

// decodeWithNHC finds where the IPHC fields of b end, puts nhc there when
// NH is set, and decompresses the whole as one unfragmented packet.
func decodeWithNHC(c *Codec, b []byte, nhc byte) ([]byte, bool) {
	if b[0]&0x04 != 0 {
		// NH=1: the NHC octet follows the IPHC fields; find their length
		// by decoding with NH clear and no next-header octet difference.
		probe := append([]byte(nil), b...)
		probe[0] &^= 0x04
		_, n, err := c.AppendDecompressed(nil, probe, extA, extB, 0)
		if err != nil {
			return nil, false
		}
		n-- // with NH clear, one more octet (the next header) was read
		b = append(append(b[:n:n], nhc), 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0x01, 0x02, 0x03)
	}
	h, n, err := c.AppendDecompressed(nil, b, extA, extB, 0)
	if err != nil {
		return nil, false
	}
	return append(h, b[n:]...), true
}

func checkReencode(t *testing.T, c *Codec, pkt []byte, src, dst mac.Addr) {
	t.Helper()
	comp, n, err := c.AppendCompressed(nil, pkt, src, dst)
	if err != nil {
		t.Fatalf("re-encode of % x: %v", pkt, err)
	}
	frame := append(comp, pkt[n:]...)
	h, m, err := c.AppendDecompressed(nil, frame, src, dst, 0)
	if err != nil {
		t.Fatalf("decode of re-encoded % x: %v", frame, err)
	}
	if got := append(h, frame[m:]...); !bytes.Equal(got, pkt) {
		t.Fatalf("decode(encode(p)) =\n % x\nwant\n % x", got, pkt)
	}
}

func TestDecompressErrors(t *testing.T) {
	c := NewCodec(prefix)
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrTruncated},
		{"IPHC truncated", "7a", ErrTruncated},
		{"IPHC inline truncated", "7800" + "00", ErrTruncated},
		{"unknown source context", "7bf0" + "10", ErrContext},
		{"reserved DAC DAM=00", "7b34", ErrMalformed},
		{"reserved multicast DAC DAM=01", "7b3d" + "000000000000", ErrMalformed},
		{"elided UDP checksum", "7e33" + "f7" + "12", ErrUnsupported},
		{"NHC extension header", "7e33" + "e0" + "1100", ErrUnsupported},
		{"NHC unknown", "7e33" + "80", ErrUnsupported},
		{"NHC missing", "7e33", ErrTruncated},
		{"mesh dispatch", "80", ErrUnsupported},
		{"derive from no address", "7b33", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := extA, extB
			if tt.name == "derive from no address" {
				src = mac.Addr{}
			}
			_, _, err := c.AppendDecompressed(nil, mustHex(tt.in), src, dst, 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestUDPChecksum(t *testing.T) {
	src := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), 1234)
	dst := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::2"), 5683)
	pkt := udpPacket(t, src.Addr(), dst.Addr(), src.Port(), dst.Port(), []byte("abc"))
	u, err := ParseUDP(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if u.Src != src || u.Dst != dst || string(u.Payload) != "abc" || u.HopLimit != DefaultHopLimit {
		t.Fatalf("parsed %+v", u)
	}
	// Computed independently (a few lines of Python over the RFC 8200 §8.1
	// pseudo-header) for this packet.
	if got := binary.BigEndian.Uint16(pkt[46:]); got != 0xc4fb {
		t.Fatalf("checksum %#04x, want 0xc4fb", got)
	}
	pkt[len(pkt)-1] ^= 0xff
	if _, err := ParseUDP(pkt); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupted payload: %v", err)
	}
	if _, err := AppendUDP(nil, netip.MustParseAddrPort("1.2.3.4:5"), dst, 0, nil); !errors.Is(err, ErrNotIPv6) {
		t.Fatalf("IPv4 source: %v", err)
	}
	if _, err := AppendUDP(nil, src, dst, 0, make([]byte, MaxDatagram)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

// TestGETFitsOneFrame pins the headline number: a CoAP GET to a node
// addressed by its MAC-derived address in the prefix is one frame with at
// most 10 octets of IPv6 and UDP headers.
func TestGETFitsOneFrame(t *testing.T) {
	c := NewCodec(prefix)
	tests := []struct {
		name     string
		gw, node mac.Addr
		port     uint16 // gateway's source port
		maxHdr   int
	}{
		{"short addresses, CoAP ports", shortA, shortB, 5683, 9},
		{"extended addresses, CoAP ports", extA, extB, 5683, 9},
		{"short addresses, ephemeral port", shortA, shortB, 49152, 9},
		{"0xF0Bx ports", shortA, shortB, 0xf0b3, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := coapPort
			if tt.port == 0xf0b3 {
				dp = 0xf0b4
			}
			pkt := udpPacket(t, addrFor(prefix, tt.gw), addrFor(prefix, tt.node), tt.port, dp, coapGET)
			frames, err := c.Fragment(nil, nil, pkt, tt.gw, tt.node, mac.MaxPayload(tt.node.Mode(), tt.gw.Mode(), true), 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != 1 {
				t.Fatalf("%d frames, want 1", len(frames))
			}
			hdr := len(frames[0]) - len(coapGET)
			t.Logf("IPv6+UDP headers: %d octets (from 48) for %d octets of CoAP", hdr, len(coapGET))
			if hdr > 10 || hdr > tt.maxHdr {
				t.Fatalf("compressed headers %d octets, want <= %d", hdr, min(10, tt.maxHdr))
			}
		})
	}
}

func fragmentAll(t testing.TB, c *Codec, pkt []byte, src, dst mac.Addr, maxPayload int, tag uint16) [][]byte {
	t.Helper()
	frames, err := c.Fragment(nil, nil, pkt, src, dst, maxPayload, tag)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		if len(f) > maxPayload {
			t.Fatalf("frame %d is %d octets, max %d", i, len(f), maxPayload)
		}
	}
	return frames
}

func TestFragmentReassemble(t *testing.T) {
	c := NewCodec(prefix)
	payload := make([]byte, 400)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	tests := []struct {
		name       string
		src, dst   mac.Addr
		maxPayload int
		order      func(n int) []int
		wantFrames int
	}{
		{"gateway to node, short, in order", shortA, shortB, mac.MaxPayload(mac.AddrShort, mac.AddrShort, true), inOrder, 4},
		{"node to gateway, extended, in order", extB, extA, mac.MaxPayload(mac.AddrExtended, mac.AddrExtended, true), inOrder, 5},
		{"reverse order", shortA, shortB, 116, reversed, 4},
		{"first fragment last", extA, extB, 104, firstLast, 5},
		{"tiny frames", shortA, shortB, 24, inOrder, 26},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := udpPacket(t, addrFor(prefix, tt.src), addrFor(prefix, tt.dst), 5683, 61000, payload)
			frames := fragmentAll(t, c, pkt, tt.src, tt.dst, tt.maxPayload, 0x1234)
			if len(frames) != tt.wantFrames {
				t.Errorf("%d frames, want %d", len(frames), tt.wantFrames)
			}
			r := NewReassembler(c, ReassemblyConfig{})
			var got []byte
			for i, k := range tt.order(len(frames)) {
				out, err := r.Input(frames[k], tt.src, tt.dst)
				if err != nil {
					t.Fatalf("fragment %d: %v", k, err)
				}
				if out != nil {
					if i != len(frames)-1 {
						t.Fatalf("complete after %d of %d fragments", i+1, len(frames))
					}
					got = out
				}
			}
			if !bytes.Equal(got, pkt) {
				t.Fatalf("reassembled\n % x\nwant\n % x", got, pkt)
			}
			if _, err := ParseUDP(got); err != nil {
				t.Fatal(err)
			}
			cn := r.Counters()
			if cn.Reassembled != 1 || cn.BytesHeld != 0 || cn.Pending != 0 {
				t.Fatalf("counters %+v", cn)
			}
		})
	}
}

func inOrder(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func reversed(n int) []int {
	s := inOrder(n)
	for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
	return s
}

func firstLast(n int) []int { return append(inOrder(n)[1:], 0) }

func TestFragmentErrors(t *testing.T) {
	c := NewCodec(prefix)
	pkt := udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), 1, 2, make([]byte, 200))
	if _, err := c.Fragment(nil, nil, pkt, shortA, shortB, 12, 0); !errors.Is(err, ErrFrameSmall) {
		t.Fatalf("12-octet frames: %v", err)
	}
	big := rawPacket(0, 0, 59, 64, addrFor(prefix, shortA), addrFor(prefix, shortB), make([]byte, MaxDatagram))
	if _, err := c.Fragment(nil, nil, big, shortA, shortB, 100, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := c.Fragment(nil, nil, []byte{0x45, 0}, shortA, shortB, 100, 0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("not IPv6: %v", err)
	}
}

func TestReassemblyDuplicatesAndOverlap(t *testing.T) {
	c := NewCodec(prefix)
	pkt := udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, make([]byte, 300))
	frames := fragmentAll(t, c, pkt, shortA, shortB, 100, 7)
	r := NewReassembler(c, ReassemblyConfig{})
	mustNil := func(b []byte, err error) {
		t.Helper()
		if b != nil || err != nil {
			t.Fatalf("got % x, %v; want nothing yet", b, err)
		}
	}
	mustNil(r.Input(frames[0], shortA, shortB))
	mustNil(r.Input(frames[0], shortA, shortB)) // duplicate
	// A fragment overlapping frames[1] at a different offset restarts.
	bad := append([]byte(nil), frames[1]...)
	bad[4]++
	mustNil(r.Input(frames[1], shortA, shortB))
	mustNil(r.Input(bad, shortA, shortB))
	cn := r.Counters()
	if cn.Duplicates != 1 || cn.Overlaps != 1 {
		t.Fatalf("counters %+v", cn)
	}
	// frames[1] conflicts with the bad fragment and restarts again; after
	// that the datagram completes once every fragment is in.
	mustNil(r.Input(frames[1], shortA, shortB))
	var got []byte
	for _, f := range frames {
		out, err := r.Input(f, shortA, shortB)
		if err != nil {
			t.Fatal(err)
		}
		if out != nil {
			got = out
		}
	}
	if !bytes.Equal(got, pkt) {
		t.Fatal("datagram not reassembled after an overlap restart")
	}
}

// fakeClock is an injectable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestReassemblyTimeout(t *testing.T) {
	c := NewCodec(prefix)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := NewReassembler(c, ReassemblyConfig{Now: clk.now})
	pkt := udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, make([]byte, 200))
	frames := fragmentAll(t, c, pkt, shortA, shortB, 100, 9)
	if out, err := r.Input(frames[0], shortA, shortB); out != nil || err != nil {
		t.Fatal(out, err)
	}
	clk.advance(DefaultReassemblyTimeout - time.Millisecond)
	r.Expire()
	if cn := r.Counters(); cn.Pending != 1 || cn.Timeouts != 0 {
		t.Fatalf("expired early: %+v", cn)
	}
	clk.advance(time.Millisecond)
	for _, f := range frames[1:] {
		if out, err := r.Input(f, shortA, shortB); out != nil || err != nil {
			t.Fatalf("completed a timed-out datagram: %v", err)
		}
	}
	cn := r.Counters()
	if cn.Timeouts != 1 || cn.Reassembled != 0 {
		t.Fatalf("counters %+v", cn)
	}
	clk.advance(DefaultReassemblyTimeout)
	r.Expire()
	if cn := r.Counters(); cn.BytesHeld != 0 || cn.Pending != 0 || cn.Timeouts != 2 {
		t.Fatalf("after second timeout: %+v", cn)
	}
}

// TestReassemblyFlood sends the first fragments of 1000 datagrams that
// never complete, from few and from many sources, and checks the held
// octets never exceed either cap, then that a real datagram still gets
// through.
func TestReassemblyFlood(t *testing.T) {
	c := NewCodec(prefix)
	cfg := ReassemblyConfig{MaxPerSource: 2000, MaxTotal: 5000, MaxDatagrams: 32}
	tests := []struct {
		name    string
		sources int
	}{
		{"one source", 1},
		{"seven sources", 7},
		{"a thousand sources", 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReassembler(c, cfg)
			perSource := map[mac.Addr]int{}
			for i := range 1000 {
				src := mac.ShortAddr(uint16(0x100 + i%tt.sources))
				size := 300 + i%900
				pkt := udpPacket(t, addrFor(prefix, src), addrFor(prefix, shortA), 5683, 5683, make([]byte, size))
				frames := fragmentAll(t, c, pkt, src, shortA, 100, uint16(i))
				if _, err := r.Input(frames[0], src, shortA); err != nil {
					t.Fatal(err)
				}
				cn := r.Counters()
				if cn.BytesHeld > cfg.MaxTotal || cn.Pending > cfg.MaxDatagrams {
					t.Fatalf("after %d: holding %d octets in %d reassemblies", i, cn.BytesHeld, cn.Pending)
				}
				clear(perSource)
				for k := range r.byKey {
					perSource[k.src] += int(k.size)
				}
				for s, n := range perSource {
					if n > cfg.MaxPerSource {
						t.Fatalf("source %v holds %d octets", s, n)
					}
				}
			}
			cn := r.Counters()
			t.Logf("peak held %d octets; evicted %d", cn.PeakHeld, cn.Evicted)
			if cn.PeakHeld > cfg.MaxTotal {
				t.Fatalf("peak %d over cap %d", cn.PeakHeld, cfg.MaxTotal)
			}
			if cn.Evicted == 0 || cn.Fragments != 1000 {
				t.Fatalf("counters %+v", cn)
			}
			pkt := udpPacket(t, addrFor(prefix, shortB), addrFor(prefix, shortA), 5683, 5683, make([]byte, 400))
			var got []byte
			for _, f := range fragmentAll(t, c, pkt, shortB, shortA, 100, 1) {
				if out, err := r.Input(f, shortB, shortA); err != nil {
					t.Fatal(err)
				} else if out != nil {
					got = out
				}
			}
			if !bytes.Equal(got, pkt) {
				t.Fatal("a real datagram did not get through after the flood")
			}
		})
	}
}

func TestReassemblyRejects(t *testing.T) {
	c := NewCodec(prefix)
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"size over MTU", "c7ff0001" + "7e77f016331633aaaa", ErrTooLarge},
		{"size under IPv6 header", "c0100001" + "7e77f016331633aaaa", ErrMalformed},
		{"FRAGN without data", "e1000001" + "05", ErrTruncated},
		{"FRAGN past the end", "e0640001" + "0c" + "0102030405060708", ErrMalformed},
		{"FRAG1 header larger than size", "c0290001" + "7e77f016331633aaaa", ErrMalformed},
		{"unknown dispatch", "00", ErrUnsupported},
		{"empty", "", ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReassembler(c, ReassemblyConfig{})
			if _, err := r.Input(mustHex(tt.in), shortA, shortB); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if cn := r.Counters(); cn.BytesHeld != 0 {
				t.Fatalf("holding %d octets after a rejected fragment", cn.BytesHeld)
			}
		})
	}
}

func TestReassemblyUncompressedDispatch(t *testing.T) {
	c := NewCodec(prefix)
	pkt := udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, coapGET)
	r := NewReassembler(c, ReassemblyConfig{})
	out, err := r.Input(append([]byte{DispatchIPv6}, pkt...), shortA, shortB)
	if err != nil || !bytes.Equal(out, pkt) {
		t.Fatalf("got % x, %v", out, err)
	}
	// And fragmented: FRAG1 with 0x41, then a FRAGN.
	big := udpPacket(t, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, make([]byte, 100))
	f1 := append([]byte{0xc0 | byte(len(big)>>8), byte(len(big)), 0, 5, DispatchIPv6}, big[:80]...)
	fn := append([]byte{0xe0 | byte(len(big)>>8), byte(len(big)), 0, 5, 10}, big[80:]...)
	if out, err := r.Input(f1, shortA, shortB); out != nil || err != nil {
		t.Fatal(out, err)
	}
	if out, err := r.Input(fn, shortA, shortB); err != nil || !bytes.Equal(out, big) {
		t.Fatalf("got % x, %v", out, err)
	}
}
