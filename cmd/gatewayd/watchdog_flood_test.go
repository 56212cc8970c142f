package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// The watchdog is fed by a probe of /.well-known/core through the
// listeners (probeLoop). With every slot of the forwarding pool held by
// requests to a silent node (two clients, at their shares, from many
// ports) the probe must keep passing, or systemd would restart the
// service for whoever can send a few CON GETs. The real binary, under a
// notify socket with a 2 s watchdog: pings go on well past the 2 s after
// which a failing probe would stop them, while a forwarded request is
// refused for want of a slot and a local one is answered.
func TestWatchdogFedWhileTheForwardingPoolIsFull(t *testing.T) {
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	ns := newNotifySocket(t)
	port := freePort(t)
	g := startGatewayd(t, fmt.Sprintf(`[proxy]
listen = ["udp://127.0.0.1:%d"]
clients = ["127.0.0.0/8"]
allow = ["127.0.0.0/8"]
timeout = "60s"
max_inflight = 8
max_inflight_per_client = 4
[metrics]
listen = "127.0.0.1:0"
`, port), withEnv("NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=2000000"))
	admin := g.adminAddr(t)
	ns.waitFor(t, "WATCHDOG=1", ns.waitFor(t, "READY=1", 0))

	gw := netipAddrPort(port)
	target := fmt.Sprintf("coap://%v/off", silent.LocalAddr())
	for _, ip := range []string{"127.0.0.2", "127.0.0.4"} {
		for i := range 4 {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: uint16(i), Token: []byte{byte(i)},
				Options: coap.Options(nil).Insert(coap.ProxyURI, []byte(fmt.Sprintf("%s/%s/%d", target, ip, i)))}
			b, _ := m.Marshal()
			if _, err := c.WriteToUDPAddrPort(b, gw); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := fmt.Sprintf("gatewayd_endpoint_requests_in_flight{listen=\"udp://127.0.0.1:%d\"} 8", port)
	testutil.Eventually(t, "the pool to fill: "+full, func() bool { return strings.Contains(scrape(t, admin), full) })
	mark := ns.len()

	u, err := coap.ListenUDP(context.Background(), "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	other := coap.NewEndpoint(u, coap.EndpointConfig{})
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fwd := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyURI, []byte(target))}
	if resp, err := other.Do(ctx, gw, fwd); err != nil || resp.Code != coap.ServiceUnavailable {
		t.Fatalf("a forwarded GET with the pool full: %v %v, want 5.03", resp, err)
	}
	if err := getWellKnown(t, port); err != nil {
		t.Fatalf("/.well-known/core with the pool full: %v", err)
	}
	// Six pings at one a second: the probe ran and passed all along, or
	// the heartbeat would have gone stale after two.
	w := mark
	for range 6 {
		w = ns.waitFor(t, "WATCHDOG=1", w) + 1
	}
	if m := scrape(t, admin); !strings.Contains(m, full) {
		t.Fatalf("the flood's requests are no longer in flight; the test proved nothing:\n%s", grepLines(m, "in_flight"))
	}
	if s := g.log.String(); strings.Contains(s, "probe of the request path failed") || strings.Contains(s, "withholding keep-alive") {
		t.Fatalf("the probe failed while the pool was full:\n%s", s)
	}
}
