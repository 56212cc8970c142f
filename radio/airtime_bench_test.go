package radio_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// IEEE 802.15.4 O-QPSK at 2.4 GHz: 250 kbit/s, so 32 µs per octet. Each
// PPDU adds a 4-octet preamble, the SFD and the PHR to the PSDU (MPDU and
// FCS); an immediate ACK is a 5-octet PSDU.
const (
	usPerOctet = 32
	phyHeader  = 6
	ackPSDU    = 5
)

// sniffer is a station on the sim's Air that records every frame and
// acknowledges none, like a capture dongle in promiscuous mode.
type sniffer struct {
	mu     sync.Mutex
	frames [][]byte // guarded by mu: MPDUs without FCS, in air order
}

func (s *sniffer) receive(f radio.Frame) bool {
	s.mu.Lock()
	s.frames = append(s.frames, slices.Clone(f.Data))
	s.mu.Unlock()
	return false
}

func (s *sniffer) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.frames
	s.frames = nil
	return f
}

// datagramStats describes one UDP datagram as it went over the air.
type datagramStats struct {
	frames       int
	psdu         int // octets of all its frames: MAC header, payload, FCS
	ipudp        int // octets of compressed IPv6 and UDP headers (IPHC + NHC)
	fragHeaders  int // octets of FRAG1/FRAGN headers
	coap         int // octets of the CoAP message
	uncompressed int // IPv6 (40) + UDP (8) + CoAP
}

// splitDatagrams groups sniffed frames into datagrams, in order, using the
// 6LoWPAN dispatch: a non-fragment or a FRAG1 starts a datagram, FRAGNs
// continue it.
func splitDatagrams(tb testing.TB, codec *sixlowpan.Codec, mpdus [][]byte) []datagramStats {
	tb.Helper()
	var out []datagramStats
	for _, m := range mpdus {
		f, err := mac.Decode(m)
		if err != nil {
			tb.Fatalf("sniffed frame does not decode: %v", err)
		}
		p := f.Payload
		psdu := len(m) + mac.FCSLen
		switch {
		case len(p) > 0 && p[0]&0xf8 == 0xe0: // FRAGN
			if len(out) == 0 {
				tb.Fatal("FRAGN before any FRAG1")
			}
			d := &out[len(out)-1]
			d.frames++
			d.psdu += psdu
			d.fragHeaders += sixlowpan.FragNHeaderLen
			continue
		}
		d := datagramStats{frames: 1, psdu: psdu}
		size := 0
		if len(p) >= sixlowpan.Frag1HeaderLen && p[0]&0xf8 == 0xc0 { // FRAG1
			size = int(binary.BigEndian.Uint16(p) & 0x7ff)
			p = p[sixlowpan.Frag1HeaderLen:]
			d.fragHeaders = sixlowpan.Frag1HeaderLen
		}
		hdr, n, err := codec.AppendDecompressed(nil, p, f.Src, f.Dst, size)
		if err != nil {
			tb.Fatalf("sniffed 6LoWPAN payload does not decompress: %v", err)
		}
		if len(hdr) != sixlowpan.IPv6HeaderLen+8 || hdr[6] != 17 {
			tb.Fatalf("sniffed datagram is not IPv6/UDP (%d header octets)", len(hdr))
		}
		udpLen := int(binary.BigEndian.Uint16(hdr[sixlowpan.IPv6HeaderLen+4:]))
		d.ipudp = n
		d.coap = udpLen - 8
		d.uncompressed = sixlowpan.IPv6HeaderLen + udpLen
		out = append(out, d)
	}
	return out
}

// airtimeUS is the time on air of a datagram's frames plus one immediate
// ACK each (unicast), without CSMA/CA backoffs or turnaround times.
func (d datagramStats) airtimeUS() int {
	return (d.psdu + d.frames*phyHeader + d.frames*(ackPSDU+phyHeader)) * usPerOctet
}

// BenchmarkAirtime sends CoAP requests from the gateway to a simulated
// node through the real driver path (radio.Open with driver "sim": the
// spinel driver over a pty to the fake RCP, radio.Conn on it) and counts
// what went over the Air, per request and its response:
//
//	go test -run '^$' -bench Airtime -benchtime 200x ./radio/
//
// The node is addressed by its MAC-derived address (fd00:db8:1::1, IID
// from 02:00:00:00:00:00:00:01), so 6LoWPAN elides both addresses.
// Reported per op (request + response): frames/op and air-B/op (PSDU
// octets, MAC header and FCS included, from the Air's counters), raw-B/op
// (what IPv6 40 + UDP 8 + CoAP would be uncompressed), air-us/op (PHY
// time at 250 kbit/s with one ACK per frame), and for the request alone
// req-frames and req-ipudp-B (compressed IPv6 + UDP header octets).
// GET-temp fails unless its request fits one frame with at most 10
// octets of IPv6 and UDP headers.
func BenchmarkAirtime(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := radio.Open(ctx, radio.Config{Name: "sim0", Driver: "sim", Channel: 15, PANID: 0xFACE,
		Options: sim.Config{Nodes: 1}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitUp(ctx); err != nil {
		b.Fatalf("link not up: %v", err)
	}
	ep := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params()})
	defer ep.Close()
	n, ok := sim.FromLink(r.Link())
	if !ok {
		b.Fatalf("link %T is not a sim.Network", r.Link())
	}
	node := n.SimNodes()[0]
	if want := netip.MustParseAddr("fd00:db8:1::1"); node.Addr() != want {
		b.Fatalf("node at %v, want %v", node.Addr(), want)
	}
	sn := &sniffer{}
	st := n.Air().Join(sn.receive)
	defer st.Leave()
	codec := sixlowpan.NewCodec(r.Prefix())
	to := netip.AddrPortFrom(node.Addr(), radio.DefaultPort)

	big := bytes.Repeat([]byte("0123456789abcdef"), 25) // 400 octets
	for _, c := range []struct {
		name     string
		req      func() *coap.Message
		want     coap.Code
		maxIPUDP int // request must fit one frame with at most this many header octets; 0: no check
	}{
		{"GET-temp", func() *coap.Message { return request(coap.GET, "/sensors/temp", nil) }, coap.Content, 10},
		{"POST-echo-400B", func() *coap.Message { return request(coap.POST, "/echo", big) }, coap.Changed, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			// One exchange outside the timer to describe one datagram each way.
			sn.take()
			do1 := func() {
				resp, err := ep.Do(ctx, to, c.req())
				if err != nil || resp.Code != c.want {
					b.Fatalf("%s: %v %v", c.name, resp, err)
				}
			}
			do1()
			ds := splitDatagrams(b, codec, sn.take())
			if len(ds) != 2 {
				b.Fatalf("%d datagrams on air for one exchange, want 2 (request, response)", len(ds))
			}
			req, resp := ds[0], ds[1]
			if c.maxIPUDP > 0 && (req.frames != 1 || req.ipudp > c.maxIPUDP) {
				b.Fatalf("request: %d frames, %d octets of IPv6+UDP headers; want 1 frame, at most %d", req.frames, req.ipudp, c.maxIPUDP)
			}
			b.Logf("request:  %d frame(s), %d PSDU octets, IPv6+UDP %d (of 48), frag headers %d, CoAP %d, uncompressed %d, %d µs",
				req.frames, req.psdu, req.ipudp, req.fragHeaders, req.coap, req.uncompressed, req.airtimeUS())
			b.Logf("response: %d frame(s), %d PSDU octets, IPv6+UDP %d (of 48), frag headers %d, CoAP %d, uncompressed %d, %d µs",
				resp.frames, resp.psdu, resp.ipudp, resp.fragHeaders, resp.coap, resp.uncompressed, resp.airtimeUS())

			before := n.Air().Stats()
			b.ResetTimer()
			for range b.N {
				do1()
			}
			b.StopTimer()
			after := n.Air().Stats()
			all := splitDatagrams(b, codec, sn.take())
			var raw, us int
			for _, d := range all {
				raw += d.uncompressed
				us += d.airtimeUS()
			}
			ops := float64(b.N)
			frames := float64(after.Frames - before.Frames)
			b.ReportMetric(frames/ops, "frames/op")
			b.ReportMetric((float64(after.Bytes-before.Bytes)+frames*mac.FCSLen)/ops, "air-B/op")
			b.ReportMetric(float64(raw)/ops, "raw-B/op")
			b.ReportMetric(float64(us)/ops, "air-us/op")
			b.ReportMetric(float64(req.frames), "req-frames")
			b.ReportMetric(float64(req.ipudp), "req-ipudp-B")
		})
	}
}
