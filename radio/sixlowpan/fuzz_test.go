package sixlowpan

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// seedPayloads are MAC payloads as the gateway and nodes send them.
func seedPayloads(t testing.TB) [][]byte {
	c := NewCodec(prefix)
	var seeds [][]byte
	for _, p := range []struct {
		src, dst mac.Addr
		n        int
	}{{shortA, shortB, len(coapGET)}, {extA, extB, 30}, {extA, shortB, 400}} {
		pkt := udpPacket(t, addrFor(prefix, p.src), addrFor(prefix, p.dst), 5683, 5683, make([]byte, p.n))
		frames, err := c.Fragment(nil, nil, pkt, p.src, p.dst, 100, 3)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, frames...)
	}
	seeds = append(seeds,
		mustHex("7e33f312aaaa6869"),
		mustHex("6000"+"6e0abcde"+"3a07"+"20010db8000000000000000000000001"+"20010db8000900000000000000000002"+"0102"),
		mustHex("7bbc"+"35"+"00400102"+"ff"),
	)
	return seeds
}

func fuzzCodec() *Codec {
	c := NewCodec(prefix)
	c.Contexts[3] = netip.MustParsePrefix("2001:db8:aaaa::/48")
	return c
}

// FuzzDecompress checks that decompression never panics and that what
// decodes survives decode→encode→decode unchanged.
func FuzzDecompress(f *testing.F) {
	for _, s := range seedPayloads(f) {
		if s[0]&0xE0 == DispatchIPHC {
			f.Add(s, false)
			f.Add(s, true)
		}
	}
	c := fuzzCodec()
	f.Fuzz(func(t *testing.T, b []byte, shortLL bool) {
		src, dst := extA, extB
		if shortLL {
			src, dst = shortA, shortB
		}
		h, n, err := c.AppendDecompressed(nil, b, src, dst, 0)
		if err != nil || len(h) == 0 {
			return
		}
		pkt := append(h, b[n:]...)
		if len(pkt) > MaxDatagram {
			return
		}
		comp, m, err := c.AppendCompressed(nil, pkt, src, dst)
		if err != nil {
			t.Fatalf("re-encode of % x: %v", pkt, err)
		}
		frame := append(comp, pkt[m:]...)
		h2, n2, err := c.AppendDecompressed(nil, frame, src, dst, 0)
		if err != nil {
			t.Fatalf("decode of re-encoded % x: %v", frame, err)
		}
		if got := append(h2, frame[n2:]...); !bytes.Equal(got, pkt) {
			t.Fatalf("decode(encode(p)) =\n % x\nwant\n % x", got, pkt)
		}
	})
}

// FuzzReassembly feeds sequences of payloads, split at 0xFF 0xFE markers,
// from two sources into a small Reassembler: no panics, caps hold, and
// anything returned as a packet is a well-formed IPv6 length.
func FuzzReassembly(f *testing.F) {
	seeds := seedPayloads(f)
	f.Add(bytes.Join(seeds, []byte{0xff, 0xfe}))
	for _, s := range seeds {
		f.Add(s)
	}
	c := fuzzCodec()
	cfg := ReassemblyConfig{MaxPerSource: 1500, MaxTotal: 2500, MaxDatagrams: 4}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReassembler(c, cfg)
		for i, p := range bytes.Split(in, []byte{0xff, 0xfe}) {
			src := shortA
			if i%3 == 2 {
				src = extA
			}
			pkt, err := r.Input(p, src, shortB)
			if err == nil && pkt != nil && len(pkt) < IPv6HeaderLen && p[0] != DispatchIPv6 {
				t.Fatalf("packet of %d octets from % x", len(pkt), p)
			}
			if cn := r.Counters(); cn.BytesHeld > cfg.MaxTotal || cn.Pending > cfg.MaxDatagrams || cn.BytesHeld < 0 {
				t.Fatalf("counters out of bounds: %+v", cn)
			}
		}
	})
}

func BenchmarkCompressGET(b *testing.B) {
	c := NewCodec(prefix)
	pkt := udpPacket(b, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, coapGET)
	frames := make([][]byte, 0, 4)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if frames, err = c.Fragment(frames[:0], buf, pkt, shortA, shortB, 116, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildAndCompressGET(b *testing.B) {
	c := NewCodec(prefix)
	src := netip.AddrPortFrom(addrFor(prefix, shortA), 5683)
	dst := netip.AddrPortFrom(addrFor(prefix, shortB), 5683)
	frames := make([][]byte, 0, 4)
	buf := make([]byte, 0, 128)
	pkt := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		p, err := AppendUDP(pkt[:0], src, dst, 0, coapGET)
		if err != nil {
			b.Fatal(err)
		}
		if frames, err = c.Fragment(frames[:0], buf, p, shortA, shortB, 116, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeGET(b *testing.B) {
	c := NewCodec(prefix)
	pkt := udpPacket(b, addrFor(prefix, shortA), addrFor(prefix, shortB), 5683, 5683, coapGET)
	frames, _ := c.Fragment(nil, nil, pkt, shortA, shortB, 116, 1)
	r := NewReassembler(c, ReassemblyConfig{})
	b.ReportAllocs()
	for b.Loop() {
		out, err := r.Input(frames[0], shortA, shortB)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseUDP(out); err != nil {
			b.Fatal(err)
		}
	}
}
