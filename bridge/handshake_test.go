package bridge

import (
	"context"
	"crypto/tls"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// handshakeFailures reads gatewayd_stream_handshake_failures_total of
// one listener and reason from the registry, as a scrape would.
func handshakeFailures(t *testing.T, p *Proxy, listen, reason string) float64 {
	t.Helper()
	fams, err := p.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "gatewayd_stream_handshake_failures_total" {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "listen" && l.GetValue() != listen || l.GetName() == "reason" && l.GetValue() != reason {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no gatewayd_stream_handshake_failures_total{listen=%q,reason=%q}", listen, reason)
	return 0
}

// waitFailures waits for the counter to reach want: the server counts a
// failure when it sees it, which may be after the client gave up.
func waitFailures(t *testing.T, p *Proxy, listen, reason string, want float64) {
	t.Helper()
	testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("handshake failures {listen=%q,reason=%q} to reach %v", listen, reason, want), func() bool {
		got := handshakeFailures(t, p, listen, reason)
		if got > want {
			t.Fatalf("handshake failures {listen=%q,reason=%q} = %v, want %v", listen, reason, got, want)
		}
		return got == want
	})
}

// Failed handshakes are counted on every stream listener, by reason: a
// TLS client that does not trust the gateway's certificate on tls:// and
// on wss://, plain HTTP to wss://, and on ws:// another path, a request
// that is no upgrade, and an upgrade without the subprotocol "coap"
// (RFC 8323 §4.1), made with curl.
func TestStreamHandshakeFailuresAreCountedByReason(t *testing.T) {
	pki := testpeer.NewPKI(t)
	p := startStreamProxy(t, func(c *Config) {
		c.Proxy.CertFile, c.Proxy.KeyFile = pki.File("server.pem"), pki.File("server.key")
	}, "tls://127.0.0.1:0", "wss://127.0.0.1:0", "ws://127.0.0.1:0")
	tlsL, wssL, wsL := p.cfg.Proxy.Listen[1], p.cfg.Proxy.Listen[2], p.cfg.Proxy.Listen[3]
	tlsA, wssA, wsA := p.StreamAddrs()[0], p.StreamAddrs()[1], p.StreamAddrs()[2]
	for _, l := range []string{tlsL, wssL, wsL} {
		for _, r := range []string{"tls", "path", "upgrade", "subprotocol", "csm"} {
			if n := handshakeFailures(t, p, l, r); n != 0 {
				t.Fatalf("%s %s: %v before any client", l, r, n)
			}
		}
	}

	untrusting := func(addr string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := (&tls.Dialer{Config: &tls.Config{ServerName: "127.0.0.1"}}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			t.Fatalf("%s: a client without the CA trusted the gateway", addr)
		}
	}
	untrusting(tlsA.String())
	waitFailures(t, p, tlsL, "tls", 1)
	untrusting(wssA.String())
	waitFailures(t, p, wssL, "tls", 1)

	// Each answer ends its exchange but the upgrade's: 101, then a
	// close frame, and the connection open until curl's --max-time.
	curl := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "curl", append([]string{"-sS", "-i", "--max-time", "3"}, args...)...).CombinedOutput()
		return string(out)
	}
	curl(fmt.Sprintf("http://%v/.well-known/coap", wssA))
	waitFailures(t, p, wssL, "tls", 2)

	ws := fmt.Sprintf("http://%v/.well-known/coap", wsA)
	if out := curl(fmt.Sprintf("http://%v/other", wsA)); !strings.Contains(out, "HTTP/1.1 404 Not Found") {
		t.Fatalf("another path: %q", out)
	}
	waitFailures(t, p, wsL, "path", 1)
	curl(ws)
	waitFailures(t, p, wsL, "upgrade", 1)
	upgrade := []string{"-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
		"-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", ws}
	if out := curl(upgrade...); !strings.Contains(out, "HTTP/1.1 101 Switching Protocols") {
		t.Fatalf("an upgrade without the subprotocol: %q", out)
	}
	waitFailures(t, p, wsL, "subprotocol", 1)
	// Each failure was counted once, under its own reason.
	for l, want := range map[string]map[string]float64{
		tlsL: {"tls": 1}, wssL: {"tls": 2}, wsL: {"path": 1, "upgrade": 1, "subprotocol": 1},
	} {
		for _, r := range []string{"tls", "path", "upgrade", "subprotocol"} {
			if got := handshakeFailures(t, p, l, r); got != want[r] {
				t.Errorf("%s %s: %v, want %v", l, r, got, want[r])
			}
		}
	}
}
