package radio_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/radiotest"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// logRecorder is a slog.Handler that keeps every record, at every level.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record // guarded by mu
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}

// drops returns the attributes of the "radio frame dropped" lines, as
// strings.
func (l *logRecorder) drops() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r.Message != "radio frame dropped" || r.Level != slog.LevelDebug {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// frame encodes a data frame in PAN 0xabcd, or fails the test.
func frame(t *testing.T, f mac.Frame) []byte {
	t.Helper()
	if f.Type == 0 {
		f.Type = mac.TypeData
	}
	b, err := f.AppendEncode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lowpanFor compresses a UDP datagram from the node to the gateway into
// one frame's 6LoWPAN payload.
func lowpanFor(t *testing.T, src, dst netip.AddrPort, srcMAC, dstMAC mac.Addr, payload []byte) []byte {
	t.Helper()
	pkt, err := sixlowpan.AppendUDP(nil, src, dst, 0, payload)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := sixlowpan.NewCodec(prefix).Fragment(nil, nil, pkt, srcMAC, dstMAC, 110, 1)
	if err != nil || len(frames) != 1 {
		t.Fatalf("%d frames, %v", len(frames), err)
	}
	return frames[0]
}

func TestConnCountsAndLogsEachDropReason(t *testing.T) {
	rec := &logRecorder{}
	var now atomicTime
	now.set(time.Unix(1000, 0))
	p := newPair(t, radio.ConnConfig{Logger: slog.New(rec), Now: now.get}, radio.ConnConfig{})
	nodeAddr := netip.AddrPortFrom(addrFor(prefix, nodeShort), 5683)
	gwAddr := p.gw.LocalAddr()
	good := lowpanFor(t, nodeAddr, gwAddr, nodeShort, gwShort, coapGET)
	hdr := mac.Frame{PANIDCompression: true, DstPAN: 0xabcd, Dst: gwShort, SrcPAN: 0xabcd, Src: nodeShort}
	with := func(edit func(*mac.Frame)) []byte {
		f := hdr
		edit(&f)
		return frame(t, f)
	}
	badSum := bytes.Clone(good)
	badSum[len(badSum)-1] ^= 0xff // the CoAP payload changes, the UDP checksum does not
	// An uncompressed IPv6 header (RFC 4944 §5.1) with next header 58
	// (ICMPv6) to the gateway.
	icmp := []byte{sixlowpan.DispatchIPv6, 0x60, 0, 0, 0, 0, 0, 58, 64}
	src16, dst16 := nodeAddr.Addr().As16(), gwAddr.Addr().As16()
	icmp = append(append(icmp, src16[:]...), dst16[:]...)

	tests := []struct {
		reason radio.DropReason
		mpdu   []byte
	}{
		{radio.DropMACTruncated, []byte{0x41}},
		{radio.DropMACMalformed, unhexT(t, "6184"+"42"+"cdab"+"0100"+"0200")},
		{radio.DropMACSecured, unhexT(t, "69a8"+"42"+"cdab"+"0100"+"4200")},
		{radio.DropMACUnsupported, unhexT(t, "0500"+"01")},
		{radio.DropNotData, []byte{0x02, 0x00, 0x01}},
		{radio.DropNoSource, frame(t, mac.Frame{DstPAN: 0xabcd, Dst: gwShort, Payload: good})},
		{radio.DropOtherPAN, with(func(f *mac.Frame) { f.Version, f.DstPAN, f.Payload = mac.Version2015, 0x1111, good })},
		{radio.DropOtherDst, with(func(f *mac.Frame) { f.Dst, f.Payload = mac.ShortAddr(0x0999), good })},
		{radio.DropLowpanTruncated, with(func(f *mac.Frame) { f.Payload = []byte{0x7e} })},
		{radio.DropLowpanUnsupported, with(func(f *mac.Frame) { f.Payload = []byte{0x01, 0x02} })},
		{radio.DropLowpanContext, with(func(f *mac.Frame) { f.Payload = []byte{0x7e, 0xf7, 0x55, 0xf0, 0x16, 0x33} })},
		{radio.DropLowpanMalformed, with(func(f *mac.Frame) { f.Payload = []byte{0xc0, 0x20, 0, 1, 0x7e} })},
		{radio.DropLowpanTooLarge, with(func(f *mac.Frame) { f.Payload = []byte{0xc7, 0xff, 0, 1, 0x7e, 0x77} })},
		{radio.DropUDPChecksum, with(func(f *mac.Frame) { f.Payload = badSum })},
		{radio.DropNotUDP, with(func(f *mac.Frame) { f.Payload = icmp })},
		{radio.DropNotLocal, with(func(f *mac.Frame) {
			f.Payload = lowpanFor(t, nodeAddr, netip.AddrPortFrom(gwAddr.Addr(), 9999), nodeShort, gwShort, coapGET)
		})},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			now.set(now.get().Add(time.Second)) // room in the log for one more line
			before, logged := p.gw.Counters(), len(rec.drops())
			if err := p.nodeLink.Send(context.Background(), tt.mpdu); err != nil {
				t.Fatal(err)
			}
			// The drop is counted, then logged: wait for both.
			testutil.Eventually(t, "the drop counted and logged", func() bool {
				return p.gw.Counters().Drops[tt.reason.String()] > before.Drops[tt.reason.String()] && len(rec.drops()) > logged
			})
			after := p.gw.Counters()
			for _, r := range radio.DropReasons() {
				want := before.Drops[r.String()]
				if r == tt.reason {
					want++
				}
				if got := after.Drops[r.String()]; got != want {
					t.Errorf("%s: %d, want %d", r, got, want)
				}
			}
			lines := rec.drops()
			last := lines[len(lines)-1]
			if last["reason"] != tt.reason.String() || last["octets"] != fmt.Sprint(len(tt.mpdu)) {
				t.Errorf("last drop line %v, want reason %s", last, tt.reason)
			}
		})
	}
	// The totals the counters had before reasons were counted add up.
	c := p.gw.Counters()
	if c.DecodeErrors != 9 || c.FramesIgnored != 4 || c.PortDrops != 2 || c.DatagramsRx != 0 {
		t.Errorf("decode errors %d, ignored %d, port drops %d, datagrams %d; want 9, 4, 2, 0", c.DecodeErrors, c.FramesIgnored, c.PortDrops, c.DatagramsRx)
	}
	if len(c.Drops) != len(radio.DropReasons()) {
		t.Errorf("Drops lists %d reasons, want all %d", len(c.Drops), len(radio.DropReasons()))
	}
	if lines := rec.drops(); len(lines) != len(tests) {
		t.Errorf("%d drop lines for %d drops", len(lines), len(tests))
	}
}

func unhexT(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		var x byte
		if _, err := fmt.Sscanf(s[i:i+2], "%02x", &x); err != nil {
			t.Fatal(err)
		}
		b = append(b, x)
	}
	return b
}

// A flood of bad frames gives a bounded number of log lines: a burst,
// then one per second of the Conn's clock, each saying how many it left
// out; the counters count every frame.
func TestConnDropLogIsRateLimited(t *testing.T) {
	rec := &logRecorder{}
	var now atomicTime
	now.set(time.Unix(1000, 0))
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	gw, err := radio.NewConn(a, radio.ConnConfig{Prefix: prefix, PANID: 0xabcd, ExtAddr: gwExt, Logger: slog.New(rec), Now: now.get})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	secured := unhexT(t, "69a8"+"42"+"cdab"+"0100"+"4200")
	const flood = 5000
	for range flood {
		if err := b.Send(context.Background(), secured); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, "the flood counted", func() bool { return gw.Counters().Drops["mac_secured"] == flood })
	lines := rec.drops()
	if len(lines) != 10 {
		t.Fatalf("%d log lines for %d dropped frames in no time, want the burst of 10", len(lines), flood)
	}
	// A second later there is room for one line, which counts the rest.
	now.set(time.Unix(1001, 0))
	if err := b.Send(context.Background(), secured); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "one more drop", func() bool { return gw.Counters().Drops["mac_secured"] == flood+1 })
	lines = rec.drops()
	if len(lines) != 11 || lines[10]["suppressed"] != fmt.Sprint(flood-10) || lines[10]["reason"] != "mac_secured" {
		t.Fatalf("after a second: %d lines, last %v; want 11, the last with suppressed=%d", len(lines), lines[len(lines)-1], flood-10)
	}
	if c := gw.Counters(); c.DecodeErrors != flood+1 {
		t.Fatalf("decode errors %d", c.DecodeErrors)
	}
	// Hours of flood: still one line per second at most.
	for i := range 100 {
		now.set(time.Unix(1001, 0).Add(time.Duration(i) * 100 * time.Millisecond))
		for range 10 {
			b.Send(context.Background(), secured)
		}
	}
	testutil.Eventually(t, "the second flood counted", func() bool { return gw.Counters().Drops["mac_secured"] == flood+1+1000 })
	if got := len(rec.drops()); got > 11+10 {
		t.Fatalf("%d lines over 10 s of flood, want at most 21", got)
	}
}

// TestConnReads2015Frames has a node send IEEE 802.15.4-2015 frames the
// way Thread 1.2, Contiki-NG and Wi-SUN stacks do and the gateway read
// them, fragmented or not, and answer.
func TestConnReads2015Frames(t *testing.T) {
	csl, _ := mac.AppendHeaderIE(nil, 0x1a, []byte{0x10, 0x00, 0x64, 0x00}) // CSL IE: phase, period
	ht2, _ := mac.AppendHeaderIE(slices.Clone(csl), mac.IEHT2, nil)
	withPayloadIE, _ := mac.AppendHeaderIE(slices.Clone(csl), mac.IEHT1, nil)
	withPayloadIE, _ = mac.AppendPayloadIE(withPayloadIE, 2, []byte{0x00, 0x12, 0x4b})
	withPayloadIE, _ = mac.AppendPayloadIE(withPayloadIE, mac.IEPT, nil)
	for _, tt := range []struct {
		name     string
		short    mac.Addr
		suppress bool
		ies      []byte
	}{
		{"extended addresses, no PAN IDs, no sequence number, payload IEs", mac.Addr{}, true, withPayloadIE},
		{"short addresses, CSL IE and HT2", gwShort, false, ht2},
		{"no IEs", gwShort, false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &logRecorder{}
			// Without short addresses both ends send extended to extended.
			p := newPair(t, radio.ConnConfig{ExtAddr: gwExt, ShortAddr: tt.short, Logger: slog.New(rec)},
				radio.ConnConfig{ExtAddr: nodeExt, ShortAddr: nodeShortIf(tt.short), FrameVersion: mac.Version2015, SuppressSeq: tt.suppress, IEs: tt.ies})
			if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			got, from := read(t, p.gw)
			if !bytes.Equal(got, coapGET) || from != p.node.LocalAddr() {
				t.Fatalf("gateway got % x from %v", got, from)
			}
			big := bytes.Repeat([]byte("0123456789"), 40)
			if err := p.node.WriteTo(context.Background(), big, p.gw.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if got, _ := read(t, p.gw); !bytes.Equal(got, big) {
				t.Fatalf("gateway reassembled %d octets, want %d", len(got), len(big))
			}
			// The node really sent version 2 frames, shaped as configured.
			sent := p.nodeLink.Sent()
			if len(sent) < 5 {
				t.Fatalf("%d frames for 2 datagrams, one of 400 octets", len(sent))
			}
			for _, b := range sent {
				f, err := mac.Decode(b)
				if err != nil || f.Version != mac.Version2015 || f.SeqSuppressed != tt.suppress || !bytes.Equal(f.IEs, tt.ies) || len(b) > mac.MaxMPDU {
					t.Fatalf("node frame % x: %+v, %v", b, f, err)
				}
				if !tt.short.IsValid() && (f.HasDstPAN() || f.HasSrcPAN()) {
					t.Fatalf("extended to extended with compression carries a PAN ID: % x", b)
				}
			}
			// And the answer goes back.
			if err := p.gw.WriteTo(context.Background(), []byte{0x64, 0x45, 0xa1, 0xb2}, from); err != nil {
				t.Fatal(err)
			}
			if got, _ := read(t, p.node); len(got) != 4 {
				t.Fatalf("node got % x", got)
			}
			if c := p.gw.Counters(); c.DecodeErrors != 0 || c.FramesIgnored != 0 || len(rec.drops()) != 0 {
				t.Fatalf("gateway dropped frames: %+v, log %v", c, rec.drops())
			}
		})
	}
}

func nodeShortIf(gw mac.Addr) mac.Addr {
	if gw.IsValid() {
		return nodeShort
	}
	return mac.Addr{}
}

func TestNewConnRefusesFramesItCannotSend(t *testing.T) {
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	unterminated, _ := mac.AppendHeaderIE(nil, 0x1a, []byte{1, 2, 3, 4})
	for _, tt := range []struct {
		name string
		cfg  radio.ConnConfig
	}{
		{"frame version 3", radio.ConnConfig{FrameVersion: 3}},
		{"IEs in 2003 frames", radio.ConnConfig{IEs: []byte{0x80, 0x3f}}},
		{"suppressed sequence numbers in 2006 frames", radio.ConnConfig{FrameVersion: mac.Version2006, SuppressSeq: true}},
		{"IEs a payload cannot follow", radio.ConnConfig{FrameVersion: mac.Version2015, IEs: unterminated}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Prefix, cfg.ExtAddr = prefix, gwExt
			if c, err := radio.NewConn(a, cfg); err == nil {
				c.Close()
				t.Fatal("NewConn accepted it")
			}
		})
	}
}
