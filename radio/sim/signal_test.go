package sim_test

import (
	"context"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// A "sim" radio's nodes are heard at their own plausible RSSI and LQI,
// each farther node weaker, and the radio tells the fake RCP's firmware
// version: what the console has to show for the demo.
func TestSimNodesAreHeardAtTheirOwnSignal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := radio.Open(ctx, radio.Config{Name: "sim0", Driver: "sim"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	if fw := r.Firmware(); !strings.HasPrefix(fw, "OPENTHREAD/") {
		t.Errorf("firmware %q, want the RCP's NCP_VERSION", fw)
	}
	e := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params()})
	defer e.Close()
	nodes := r.Nodes()
	for range 3 {
		for _, n := range nodes {
			req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: coap.Options{}.Insert(coap.URIPath, []byte("echo"))}
			if _, err := e.Do(ctx, netip.AddrPortFrom(n, 5683), req); err != nil {
				t.Fatalf("GET %v: %v", n, err)
			}
		}
	}
	byAddr := map[netip.Addr]radio.NodeStats{}
	for _, s := range r.NodeStats() {
		byAddr[s.Addr] = s
	}
	prev := int8(0)
	for i, n := range nodes {
		s, ok := byAddr[n]
		if !ok {
			t.Fatalf("node %v not in %+v", n, r.NodeStats())
		}
		want := -40 - sim.NodeAttenuation(i)
		if math.Abs(float64(s.RSSI)-want) > 3 || s.LQI == 0 || s.LQI == 255 || s.FramesRx < 3 || s.FramesTx < 3 || s.LastHeard.IsZero() {
			t.Errorf("node %d %v: %+v, want RSSI %v±3 dBm, an LQI between, frames both ways", i, n, s, want)
		}
		if i > 0 && s.RSSI >= prev {
			t.Errorf("node %d heard at %d dBm, not weaker than node %d's %d", i, s.RSSI, i-1, prev)
		}
		prev = s.RSSI
	}
}
