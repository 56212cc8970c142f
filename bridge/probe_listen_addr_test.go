package bridge

import (
	"context"
	"net"
	"testing"
	"time"
)

// The watchdog probe must pass for a healthy proxy whatever address its
// listener is bound to. Bound to a LAN address, the probe's datagram comes
// from that address, not from loopback, so isProbe does not let it through
// the clients filter unless the operator happens to list the gateway's own
// address; the probe times out and systemd's watchdog restarts a healthy
// daemon over and over.
func TestProbePassesForListenerOnNonLoopbackAddress(t *testing.T) {
	var lan string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			lan = n.IP.String()
			break
		}
	}
	if lan == "" {
		t.Fatal("this test needs a non-loopback IPv4 address on the machine")
	}
	p := startProxy(t, func(c *Config) {
		c.Proxy.Listen = []string{"udp://" + lan + ":0"}
		c.Proxy.Clients = []string{"10.99.0.0/16"} // the radio-side clients, not the gateway itself
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := p.Probe(ctx); err != nil {
		t.Fatalf("probe of a healthy proxy listening on %s: %v", lan, err)
	}
}
