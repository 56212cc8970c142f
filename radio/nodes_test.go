package radio_test

import (
	"context"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/radiotest"
)

func nodeStatsOf(c *radio.Conn, m mac.Addr) (radio.NodeStats, bool) {
	for _, s := range c.NodeStats() {
		if s.MAC == m {
			return s, true
		}
	}
	return radio.NodeStats{}, false
}

// The gateway's Conn keeps, per node, the RSSI and LQI of its last frame,
// when that was, its address and the frames both ways: what the console
// shows of each node.
func TestConnKeepsPerNodeSignalAndFrames(t *testing.T) {
	clock := &atomicTime{}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock.set(t0)
	p := newPair(t, radio.ConnConfig{Now: clock.get}, radio.ConnConfig{})
	nodeIP := addrFor(prefix, nodeShort)

	p.nodeLink.SetSignal(-71, 140)
	if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	read(t, p.gw)
	s, ok := nodeStatsOf(p.gw, nodeShort)
	if !ok {
		t.Fatalf("no stats for %v: %+v", nodeShort, p.gw.NodeStats())
	}
	if s.RSSI != -71 || s.LQI != 140 || !s.LastHeard.Equal(t0) || s.FramesRx != 1 || s.FramesTx != 0 || s.Addr != nodeIP {
		t.Fatalf("after one frame: %+v", s)
	}

	// A later frame replaces the signal and the time; a reply counts out.
	clock.set(t0.Add(time.Minute))
	p.nodeLink.SetSignal(-80, 90)
	if err := p.node.WriteTo(context.Background(), coapGET, p.gw.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	read(t, p.gw)
	if err := p.gw.WriteTo(context.Background(), []byte("reply"), netip.AddrPortFrom(nodeIP, 5683)); err != nil {
		t.Fatal(err)
	}
	read(t, p.node)
	s, _ = nodeStatsOf(p.gw, nodeShort)
	if s.RSSI != -80 || s.LQI != 90 || !s.LastHeard.Equal(t0.Add(time.Minute)) || s.FramesRx != 2 || s.FramesTx != 1 {
		t.Fatalf("after a second frame and a reply: %+v", s)
	}
	if c := p.gw.Counters(); c.Nodes != 1 || c.NodesEvicted != 0 {
		t.Fatalf("counters: %d nodes, %d evicted", c.Nodes, c.NodesEvicted)
	}
}

// A node the gateway only sent to is listed, never heard; a frame for
// another PAN names no node.
func TestConnNodeStatsOnlyFramesForUs(t *testing.T) {
	p := newPair(t, radio.ConnConfig{}, radio.ConnConfig{})
	far := addrFor(prefix, mac.ShortAddr(0x0777))
	// Nobody answers for 0x0777 on the pair: the Link still takes it.
	if err := p.gw.WriteTo(context.Background(), []byte("x"), netip.AddrPortFrom(far, 5683)); err != nil {
		t.Fatal(err)
	}
	s, ok := nodeStatsOf(p.gw, mac.ShortAddr(0x0777))
	if !ok || !s.LastHeard.IsZero() || s.RSSI != 127 || s.FramesTx != 1 || s.Addr != far {
		t.Fatalf("sent-only node: %+v (listed %v)", s, ok)
	}
	sendRaw(t, p.nodeLink, 0x1234, netip.AddrPortFrom(addrFor(prefix, nodeExt), 5683), p.gw.LocalAddr(), nodeExt, gwShort, []byte("x"))
	testutil.Eventually(t, "the other-PAN frame", func() bool { return p.gw.Counters().Drops["other_pan"] == 1 })
	if _, ok := nodeStatsOf(p.gw, nodeExt); ok {
		t.Fatalf("a frame for another PAN made a node: %+v", p.gw.NodeStats())
	}
}

// Frames from ever new (forged) source addresses cannot grow the table:
// past MaxNodes the node heard from least recently gives way.
func TestConnNodeStatsAreBounded(t *testing.T) {
	clock := &atomicTime{}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	gw, err := radio.NewConn(a, radio.ConnConfig{Prefix: prefix, PANID: 0xabcd, ExtAddr: gwExt, ShortAddr: gwShort, MaxNodes: 4, Now: clock.get})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	for i := range 10 {
		clock.set(t0.Add(time.Duration(i) * time.Second))
		src := mac.ShortAddr(uint16(0x100 + i))
		sendRaw(t, b, 0xabcd, netip.AddrPortFrom(addrFor(prefix, src), 5683), gw.LocalAddr(), src, gwShort, []byte("x"))
		read(t, gw)
	}
	c := gw.Counters()
	if c.Nodes != 4 || c.NodesEvicted != 6 {
		t.Fatalf("%d nodes, %d evicted; want 4 and 6", c.Nodes, c.NodesEvicted)
	}
	for i := 6; i < 10; i++ {
		if _, ok := nodeStatsOf(gw, mac.ShortAddr(uint16(0x100+i))); !ok {
			t.Errorf("the node heard %d s in is gone; the least recent should go first: %+v", i, gw.NodeStats())
		}
	}
}
