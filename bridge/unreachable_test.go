//go:build linux

package bridge

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// closedPort is an address where a UDP socket was bound and closed: the
// host answers a datagram sent there with ICMP port unreachable.
func closedPort(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return ap
}

// upstreamStats are the counters of the upstream socket of a target's
// family.
func (p *Proxy) upstreamStats(target netip.AddrPort) coap.Stats {
	return p.up.endpoint(target).Stats()
}

// A target whose port is closed gets 5.02 (README: "target unreachable")
// at once: the proxy's upstream exchange is ended by the ICMP report, not
// by the 30 s timeout configured here (the client gives up after 20 s, so
// a 5.04 could not pass). Forwarded and reverse-routed requests, CON and
// NON, an Observe registration, over IPv4 and IPv6.
func TestClosedPortTargetIs502ByICMP(t *testing.T) {
	dead4 := closedPort(t, "udp4", "127.0.0.1:0")
	dead6 := closedPort(t, "udp6", "[::1]:0")
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{30 * time.Second}
		c.Route = []RouteConfig{{Name: "dead", Target: "coap://" + dead4.String()}}
	})
	c := client(t)
	get := func(uri string) *coap.Message { return &coap.Message{Code: coap.GET, Options: proxyURI(uri)} }
	for _, tc := range []struct {
		name   string
		req    *coap.Message
		target netip.AddrPort
	}{
		{"forwarded CON", get("coap://" + dead4.String() + "/x"), dead4},
		{"forwarded NON", func() *coap.Message {
			m := get("coap://" + dead4.String() + "/x")
			m.Type = coap.NonConfirmable
			return m
		}(), dead4},
		{"forwarded to IPv6", get("coap://" + dead6.String() + "/x"), dead6},
		{"reverse route", &coap.Message{Code: coap.GET, Options: coap.Options{}.Insert(coap.URIPath, []byte("dead")).Insert(coap.URIPath, []byte("x"))}, dead4},
		{"observe registration", func() *coap.Message {
			m := get("coap://" + dead4.String() + "/obs")
			m.Options = m.Options.SetUint(coap.Observe, 0)
			return m
		}(), dead4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.upstreamStats(tc.target)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, p.Addrs()[0], tc.req)
			if err != nil {
				t.Fatalf("no answer: %v (upstream %+v)", err, p.upstreamStats(tc.target))
			}
			if resp.Code != coap.BadGateway || string(resp.Payload) != "target unreachable" {
				t.Fatalf("got %v %q, want 5.02 \"target unreachable\"", resp.Code, resp.Payload)
			}
			after := p.upstreamStats(tc.target)
			if after.Unreachable != before.Unreachable+1 || after.Timeouts != before.Timeouts {
				t.Fatalf("upstream counters %+v then %+v: want one exchange ended by ICMP, none by time-out", before, after)
			}
		})
	}
	if s := p.Hub().Stats(); s.Upstreams != 0 || s.Observers != 0 {
		t.Fatalf("hub %+v after a failed registration", s)
	}
}

// libcoap's coap-client, through the proxy to a closed port, gets 5.02
// from the ICMP report, well inside the 30 s timeout.
func TestLibcoapClientGets502ForClosedPort(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatalf("coap-client-notls (Debian libcoap3-bin) is needed: %v", err)
	}
	dead := closedPort(t, "udp4", "127.0.0.1:0")
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{30 * time.Second} })
	before := p.upstreamStats(dead)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	// -B 20: the client waits 20 s at most, less than the proxy's
	// timeout, so only the ICMP path can answer it.
	out, err := exec.CommandContext(ctx, bin, "-B", "20", "-m", "get", "-P", "coap://"+p.Addrs()[0].String(),
		"coap://"+dead.String()+"/x").CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "5.02") || !strings.Contains(string(out), "target unreachable") {
		t.Fatalf("coap-client printed %q, want 5.02 and the diagnostic", out)
	}
	if after := p.upstreamStats(dead); after.Unreachable != before.Unreachable+1 || after.Timeouts != before.Timeouts {
		t.Fatalf("upstream counters %+v then %+v: want one exchange ended by ICMP", before, after)
	}
}
