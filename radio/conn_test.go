package radio_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/radiotest"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

var (
	prefix    = netip.MustParsePrefix("2001:db8:5:6::/64")
	gwShort   = mac.ShortAddr(0x0001)
	gwExt     = mac.ExtendedAddrUint64(0x00124b0000000001)
	nodeShort = mac.ShortAddr(0x0042)
	nodeExt   = mac.ExtendedAddrUint64(0x00124b0000000042)
	coapGET   = []byte{0x44, 0x01, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0xb4, 't', 'e', 's', 't', 0x0a, 'h', 'u', 'm', 'i', 'd', 'i', 't', 'y'}
)

func addrFor(p netip.Prefix, m mac.Addr) netip.Addr {
	a := p.Addr().As16()
	iid, _ := m.IID()
	copy(a[8:], iid[:])
	return netip.AddrFrom16(a)
}

type pair struct {
	gw, node         *radio.Conn
	gwLink, nodeLink *radiotest.Link
}

// newPair connects a gateway Conn and a node Conn (standing in for a
// constrained node) over an in-memory Link pair.
func newPair(t *testing.T, gwCfg, nodeCfg radio.ConnConfig) pair {
	t.Helper()
	a, b := radiotest.Pair()
	for _, c := range []*radio.ConnConfig{&gwCfg, &nodeCfg} {
		if !c.Prefix.IsValid() {
			c.Prefix = prefix
		}
		if c.PANID == 0 {
			c.PANID = 0xabcd
		}
	}
	if !gwCfg.ExtAddr.IsValid() {
		gwCfg.ExtAddr, gwCfg.ShortAddr = gwExt, gwShort
	}
	if !nodeCfg.ExtAddr.IsValid() {
		nodeCfg.ExtAddr, nodeCfg.ShortAddr = nodeExt, nodeShort
	}
	gw, err := radio.NewConn(a, gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	node, err := radio.NewConn(b, nodeCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		gw.Close()
		node.Close()
		a.Close()
		b.Close()
	})
	return pair{gw: gw, node: node, gwLink: a, nodeLink: b}
}

// read returns the next datagram c receives; nothing within a generous
// deadline fails the test (closing c at cleanup ends the read).
func read(t *testing.T, c *radio.Conn) ([]byte, netip.AddrPort) {
	t.Helper()
	type result struct {
		b    []byte
		from netip.AddrPort
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		buf := make([]byte, 1500)
		n, from, err := c.ReadFrom(buf)
		ch <- result{buf[:n], from, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.b, r.from
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing received (counters %+v)", c.Counters())
		return nil, netip.AddrPort{}
	}
}

func TestConnGETIsOneFrameWithSmallHeaders(t *testing.T) {
	tests := []struct {
		name           string
		nodeShort      mac.Addr
		gwShort        mac.Addr
		wantMACHdr     int
		wantMaxHdrIPHC int
	}{
		{"short addresses", nodeShort, gwShort, 9, 10},
		{"extended addresses", mac.Addr{}, mac.Addr{}, 21, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t,
				radio.ConnConfig{ExtAddr: gwExt, ShortAddr: tt.gwShort},
				radio.ConnConfig{ExtAddr: nodeExt, ShortAddr: tt.nodeShort})
			nodeMAC := nodeExt
			if tt.nodeShort.IsValid() {
				nodeMAC = tt.nodeShort
			}
			to := netip.AddrPortFrom(addrFor(prefix, nodeMAC), 5683)
			if err := p.gw.WriteTo(context.Background(), coapGET, to); err != nil {
				t.Fatal(err)
			}
			got, from := read(t, p.node)
			if !bytes.Equal(got, coapGET) || from != p.gw.LocalAddr() {
				t.Fatalf("node got % x from %v, want the GET from %v", got, from, p.gw.LocalAddr())
			}
			sent := p.gwLink.Sent()
			if len(sent) != 1 {
				t.Fatalf("%d frames for a GET, want 1", len(sent))
			}
			hdr := len(sent[0]) - tt.wantMACHdr - len(coapGET)
			t.Logf("GET: 1 frame of %d octets: MAC header %d, IPv6+UDP %d, CoAP %d", len(sent[0]), tt.wantMACHdr, hdr, len(coapGET))
			if hdr > tt.wantMaxHdrIPHC {
				t.Fatalf("IPv6+UDP headers %d octets, want <= %d", hdr, tt.wantMaxHdrIPHC)
			}
			f, err := mac.Decode(sent[0])
			if err != nil || !f.AckRequest || f.Dst != nodeMAC || f.DstPAN != 0xabcd || !f.PANIDCompression {
				t.Fatalf("frame %+v, %v", f, err)
			}
			// And the reply, from the node's side.
			if err := p.node.WriteTo(context.Background(), []byte{0x64, 0x45, 0xa1, 0xb2}, from); err != nil {
				t.Fatal(err)
			}
			if got, from := read(t, p.gw); from != to || len(got) != 4 {
				t.Fatalf("gateway got % x from %v, want from %v", got, from, to)
			}
		})
	}
}

func TestConnFragmentsBothWays(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	payload := make([]byte, 400)
	for i := range payload {
		payload[i] = byte(i)
	}
	tests := []struct {
		name     string
		from, to *radio.Conn
		link     *radiotest.Link
	}{
		{"gateway to node", p.gw, p.node, p.gwLink},
		{"node to gateway", p.node, p.gw, p.nodeLink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.link.Sent())
			if err := tt.from.WriteTo(context.Background(), payload, tt.to.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			got, from := read(t, tt.to)
			if !bytes.Equal(got, payload) || from != tt.from.LocalAddr() {
				t.Fatalf("got %d octets from %v", len(got), from)
			}
			frames := len(tt.link.Sent()) - before
			t.Logf("400-octet payload: %d frames", frames)
			if frames < 4 {
				t.Fatalf("%d frames for 400 octets", frames)
			}
			if c := tt.to.Counters(); c.Reassembly.Reassembled == 0 || c.Reassembly.BytesHeld != 0 {
				t.Fatalf("receiver counters %+v", c)
			}
		})
	}
}

func TestConnMulticastGoesToBroadcast(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	to := netip.MustParseAddrPort("[ff02::fd]:5683") // all CoAP nodes
	if err := p.gw.WriteTo(context.Background(), coapGET, to); err != nil {
		t.Fatal(err)
	}
	f, err := mac.Decode(p.gwLink.Sent()[0])
	if err != nil || !f.Dst.IsBroadcast() || f.AckRequest {
		t.Fatalf("frame %+v, %v: want broadcast without ack request", f, err)
	}
	got, from := read(t, p.node)
	if !bytes.Equal(got, coapGET) || !from.Addr().IsLinkLocalUnicast() {
		t.Fatalf("node got % x from %v, want from a link-local address", got, from)
	}
}

// sendRaw injects a UDP packet from the node side as hand-made frames.
func sendRaw(t *testing.T, l *radiotest.Link, pan uint16, src, dst netip.AddrPort, srcMAC, dstMAC mac.Addr, payload []byte) {
	t.Helper()
	pkt, err := sixlowpan.AppendUDP(nil, src, dst, 0, payload)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := sixlowpan.NewCodec(prefix).Fragment(nil, nil, pkt, srcMAC, dstMAC, 100, 77)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range frames {
		f := mac.Frame{Type: mac.TypeData, PANIDCompression: true, Seq: uint8(i), DstPAN: pan, Dst: dstMAC, SrcPAN: pan, Src: srcMAC, Payload: p}
		b, err := f.AppendEncode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Send(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConnNeighbors(t *testing.T) {
	staticIP := netip.MustParseAddr("2001:db8:5:6::5")
	staticMAC := mac.ShortAddr(0x0505)
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	gw, err := radio.NewConn(a, radio.ConnConfig{
		Prefix: prefix, PANID: 0xabcd, ExtAddr: gwExt, ShortAddr: gwShort,
		Neighbors: []radio.Neighbor{{IP: staticIP, MAC: staticMAC}}, MaxNeighbors: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	// Nodes with addresses that do not derive from their MAC addresses
	// speak first; the gateway learns them, at most MaxNeighbors.
	learned := []struct {
		ip  netip.Addr
		mac mac.Addr
	}{
		{netip.MustParseAddr("2001:db8:5:6::1:1"), mac.ShortAddr(0x0101)},
		{netip.MustParseAddr("2001:db8:5:6::1:2"), mac.ShortAddr(0x0102)},
		{netip.MustParseAddr("2001:db8:5:6::1:3"), mac.ExtendedAddrUint64(0x0102030405060708)},
	}
	for _, n := range learned {
		sendRaw(t, b, 0xabcd, netip.AddrPortFrom(n.ip, 5683), gw.LocalAddr(), n.mac, gwShort, []byte("hello"))
		if _, from := read(t, gw); from.Addr() != n.ip {
			t.Fatalf("from %v, want %v", from, n.ip)
		}
	}
	if c := gw.Counters(); c.Neighbors != 2 {
		t.Fatalf("%d learned neighbours, want the cap of 2", c.Neighbors)
	}
	tests := []struct {
		name string
		to   netip.Addr
		want mac.Addr
		err  error
	}{
		{"static entry", staticIP, staticMAC, nil},
		{"learned, most recent", learned[2].ip, learned[2].mac, nil},
		{"learned, evicted oldest falls back to IID", learned[0].ip, mac.AddrFromIID([8]byte{0, 0, 0, 0, 0, 1, 0, 1}), nil},
		{"short-derived IID in prefix", addrFor(prefix, mac.ShortAddr(0x0077)), mac.ShortAddr(0x0077), nil},
		{"EUI-64-derived IID, link-local", addrFor(netip.MustParsePrefix("fe80::/64"), nodeExt), nodeExt, nil},
		{"off-link", netip.MustParseAddr("2001:db8:ffff::1"), mac.Addr{}, radio.ErrNoRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(a.Sent())
			err := gw.WriteTo(context.Background(), []byte("x"), netip.AddrPortFrom(tt.to, 5683))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			sent := a.Sent()[before:]
			f, err := mac.Decode(sent[0])
			if err != nil || f.Dst != tt.want {
				t.Fatalf("sent to %v (%v), want %v", f.Dst, err, tt.want)
			}
			for range sent {
				b.Recv(context.Background()) // drain the peer
			}
		})
	}
}

func TestConnLinkErrorsStayDetectable(t *testing.T) {
	tests := []struct {
		name    string
		fail    []error // errors Send returns, in turn, before succeeding
		retries int
		want    error
	}{
		{"down", []error{radio.ErrDown}, 3, radio.ErrDown},
		{"no ack without retries", []error{radio.ErrNoAck}, 0, radio.ErrNoAck},
		{"busy then retried", []error{radio.ErrChannelBusy, radio.ErrChannelBusy}, 2, nil},
		{"busy beyond retries", []error{radio.ErrChannelBusy, radio.ErrChannelBusy}, 1, radio.ErrChannelBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, radio.ConnConfig{FrameRetries: tt.retries}, radio.ConnConfig{})
			fails := append([]error(nil), tt.fail...)
			p.gwLink.FailSend(func([]byte) error {
				if len(fails) == 0 {
					return nil
				}
				err := fails[0]
				fails = fails[1:]
				return err
			})
			err := p.gw.WriteTo(context.Background(), coapGET, p.node.LocalAddr())
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want != nil && p.gw.Counters().SendErrors != 1 {
				t.Fatalf("counters %+v", p.gw.Counters())
			}
		})
	}
}

func TestConnCancelledContext(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Fill the peer's queue so Send must wait, then see ctx end it.
	p.node.Close()
	for range radiotest.QueueLen {
		p.gwLink.Send(context.Background(), []byte{2, 0, 0})
	}
	if err := p.gw.WriteTo(ctx, coapGET, p.node.LocalAddr()); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestConnQueueDropsWhenFull(t *testing.T) {
	p := newPair(t, radio.ConnConfig{QueueLen: 2}, radio.ConnConfig{})
	for range 5 {
		if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, "5 frames", func() bool { return p.gw.Counters().FramesRx == 5 })
	if c := p.gw.Counters(); c.DatagramsRx != 2 || c.QueueDrops != 3 {
		t.Fatalf("counters %+v", c)
	}
}

func TestConnFiltersAndCounts(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	node := netip.AddrPortFrom(addrFor(prefix, nodeShort), 5683)
	tests := []struct {
		name  string
		send  func()
		count func(radio.ConnCounters) uint64
	}{
		{"other PAN", func() {
			sendRaw(t, p.nodeLink, 0x1111, node, p.gw.LocalAddr(), nodeShort, gwShort, coapGET)
		}, func(c radio.ConnCounters) uint64 { return c.FramesIgnored }},
		{"other MAC", func() {
			sendRaw(t, p.nodeLink, 0xabcd, node, p.gw.LocalAddr(), nodeShort, mac.ShortAddr(0x0999), coapGET)
		}, func(c radio.ConnCounters) uint64 { return c.FramesIgnored }},
		{"other port", func() {
			sendRaw(t, p.nodeLink, 0xabcd, node, netip.AddrPortFrom(p.gw.LocalAddr().Addr(), 9999), nodeShort, gwShort, coapGET)
		}, func(c radio.ConnCounters) uint64 { return c.PortDrops }},
		{"garbage frame", func() {
			p.nodeLink.Send(context.Background(), []byte{0x41})
		}, func(c radio.ConnCounters) uint64 { return c.DecodeErrors }},
		{"bad 6LoWPAN payload", func() {
			f := mac.Frame{Type: mac.TypeData, PANIDCompression: true, DstPAN: 0xabcd, Dst: gwShort, SrcPAN: 0xabcd, Src: nodeShort, Payload: []byte{0x7e}}
			b, _ := f.AppendEncode(nil)
			p.nodeLink.Send(context.Background(), b)
		}, func(c radio.ConnCounters) uint64 { return c.DecodeErrors }},
		{"ack frame", func() {
			p.nodeLink.Send(context.Background(), []byte{0x02, 0x00, 0x01})
		}, func(c radio.ConnCounters) uint64 { return c.FramesIgnored }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.count(p.gw.Counters())
			tt.send()
			// FramesRx goes up before the counter of what became of the
			// frame: wait for the latter itself.
			testutil.Eventually(t, "the frame counted", func() bool { return tt.count(p.gw.Counters()) > before })
			if got := tt.count(p.gw.Counters()); got != before+1 {
				t.Fatalf("counter went %d -> %d", before, got)
			}
		})
	}
	if c := p.gw.Counters(); c.DatagramsRx != 0 {
		t.Fatalf("%d datagrams delivered from filtered frames", c.DatagramsRx)
	}
}

func TestConnReassemblyTimeoutInjectedClock(t *testing.T) {
	var now atomicTime
	now.set(time.Unix(5000, 0))
	p := newPair(t, radio.ConnConfig{Reassembly: sixlowpan.ReassemblyConfig{Now: now.get}}, radio.ConnConfig{})
	// Send only the first fragment of a large datagram, by hand.
	pkt, _ := sixlowpan.AppendUDP(nil, netip.AddrPortFrom(addrFor(prefix, nodeShort), 5683), p.gw.LocalAddr(), 0, make([]byte, 300))
	frames, _ := sixlowpan.NewCodec(prefix).Fragment(nil, nil, pkt, nodeShort, gwShort, 100, 1)
	f := mac.Frame{Type: mac.TypeData, PANIDCompression: true, DstPAN: 0xabcd, Dst: gwShort, SrcPAN: 0xabcd, Src: nodeShort, Payload: frames[0]}
	b, _ := f.AppendEncode(nil)
	p.nodeLink.Send(context.Background(), b)
	testutil.Eventually(t, "the fragment", func() bool { return p.gw.Counters().Reassembly.Pending == 1 })
	now.set(time.Unix(5000, 0).Add(sixlowpan.DefaultReassemblyTimeout))
	// Any later frame drives expiry.
	if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	read(t, p.gw)
	if c := p.gw.Counters(); c.ReassemblyDrops != 1 || c.Reassembly.Timeouts != 1 || c.Reassembly.BytesHeld != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestConnCloseIsIdempotentAndUnblocks(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	c, err := radio.NewConn(a, radio.ConnConfig{Prefix: prefix, ExtAddr: gwExt})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, radio.ErrConnClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v", err)
	}
	if err := c.WriteTo(context.Background(), coapGET, netip.MustParseAddrPort("[ff02::1]:5683")); !errors.Is(err, radio.ErrConnClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
	// Close waited for the reader; the ReadFrom goroutine has returned.
	testutil.Eventually(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestConnTruncatesLongDatagram(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	n, _, err := p.gw.ReadFrom(b)
	if err != nil || n != 4 || !bytes.Equal(b, coapGET[:4]) {
		t.Fatalf("n=%d %v", n, err)
	}
}

func TestNewConnRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  radio.ConnConfig
	}{
		{"no prefix", radio.ConnConfig{ExtAddr: gwExt}},
		{"a /48", radio.ConnConfig{Prefix: netip.MustParsePrefix("2001:db8::/48"), ExtAddr: gwExt}},
		{"IPv4 prefix", radio.ConnConfig{Prefix: netip.MustParsePrefix("10.0.0.0/8"), ExtAddr: gwExt}},
		{"no extended address", radio.ConnConfig{Prefix: prefix, ExtAddr: gwShort}},
		{"broadcast short", radio.ConnConfig{Prefix: prefix, ExtAddr: gwExt, ShortAddr: mac.Broadcast}},
		{"bad neighbour", radio.ConnConfig{Prefix: prefix, ExtAddr: gwExt, Neighbors: []radio.Neighbor{{IP: netip.MustParseAddr("10.0.0.1"), MAC: gwShort}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := radiotest.Pair()
			if c, err := radio.NewConn(a, tt.cfg); err == nil {
				c.Close()
				t.Fatal("accepted")
			}
		})
	}
}

func BenchmarkConnWriteGET(b *testing.B) {
	a, peer := radiotest.Pair()
	defer a.Close()
	defer peer.Close()
	c, err := radio.NewConn(a, radio.ConnConfig{Prefix: prefix, PANID: 1, ExtAddr: gwExt, ShortAddr: gwShort})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := peer.Recv(context.Background()); err != nil {
				return
			}
		}
	}()
	to := netip.AddrPortFrom(addrFor(prefix, nodeShort), 5683)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteTo(context.Background(), coapGET, to); err != nil {
			b.Fatal(err)
		}
	}
	peer.Close()
	<-drained
}
