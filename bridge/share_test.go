package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// silentOrigin reads requests and never answers: a node that is off.
func silentOrigin(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// uncacheable answers 2.05 with Max-Age 0, so that every request crosses
// the proxy to the origin.
func uncacheable(*coap.Message) *coap.Message {
	m := &coap.Message{Code: coap.Content, Payload: []byte("live")}
	m.Options = m.Options.SetUint(coap.MaxAge, 0)
	return m
}

// spoofer sends CON GETs through the proxy from a new source port of ip
// each, as a spoofer does, and never acknowledges what comes back.
type spoofer struct {
	t     *testing.T
	ip    string
	socks []*net.UDPConn
}

func (s *spoofer) send(p *Proxy, uri string) *net.UDPConn {
	s.t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(s.ip)})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	s.socks = append(s.socks, c)
	m := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: uint16(len(s.socks)), Token: []byte{0xf1, byte(len(s.socks))}, Options: proxyURI(uri)}
	b, err := m.Marshal()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort(b, p.Addrs()[0]); err != nil {
		s.t.Fatal(err)
	}
	return c
}

// answer reads what the proxy sends to c within 10 s.
func answer(t *testing.T, c *net.UDPConn) *coap.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m coap.Message
	if err := m.Decode(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m.Clone()
}

// clientOn is a client endpoint on a loopback address of its own.
func clientOn(t *testing.T, ip string) *coap.Endpoint {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{})
	t.Cleanup(func() { e.Close() })
	return e
}

// waitInflight waits for the listener to have n requests in flight.
func waitInflight(t *testing.T, p *Proxy, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%d requests in flight", n), func() bool { return p.servers[0].Stats().Inflight == n })
}

var wellKnown = coap.Options(nil).Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))

// One client (127.0.0.2, a new source port per request) sends CON GETs
// through the proxy to a silent upstream until its share is full: the
// rest get a small 5.03 with Max-Age. Meanwhile another client's
// forwarded GETs to a live origin and its local GETs are all answered,
// and the watchdog's probe passes.
func TestOneSpooferCannotLockOthersOut(t *testing.T) {
	silent := silentOrigin(t)
	live := newRecorder(t, uncacheable)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Clients = []string{"127.0.0.0/8"}
		c.Proxy.Allow = []string{"127.0.0.0/8"}
		c.Proxy.Timeout = Duration{30 * time.Second} // the flood's exchanges outlast the test
		c.Proxy.MaxInflightPerClient = 8
	})
	flood := &spoofer{t: t, ip: "127.0.0.2"}
	for i := range 8 {
		flood.send(p, fmt.Sprintf("coap://%v/hang/%d", silent, i))
	}
	waitInflight(t, p, 8)
	for i := range 8 {
		c := flood.send(p, fmt.Sprintf("coap://%v/more/%d", silent, i))
		resp := answer(t, c)
		age, _ := resp.Options.Uint(coap.MaxAge)
		if resp.Code != coap.ServiceUnavailable || resp.Type != coap.Acknowledgement || age != 30 || len(resp.Options) != 1 || len(resp.Payload) != 0 {
			t.Fatalf("request %d over the share: %v %v %v %q, want a piggybacked 5.03 with Max-Age 30 alone", 9+i, resp.Type, resp.Code, resp.Options, resp.Payload)
		}
	}
	if s := p.servers[0].Stats(); s.ClientBusy != 8 || s.Busy != 0 || s.Inflight != 8 {
		t.Fatalf("after the flood: ClientBusy %d, Busy %d, Inflight %d; want 8, 0, 8", s.ClientBusy, s.Busy, s.Inflight)
	}

	other := clientOn(t, "127.0.0.3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		req := &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://%v/r/%d", live.addr, i))}
		resp, err := other.Do(ctx, p.Addrs()[0], req)
		if err != nil || resp.Code != coap.Content || string(resp.Payload) != "live" {
			t.Fatalf("the other client's forwarded GET %d: %v %v", i, resp, err)
		}
		resp, err = other.Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: wellKnown})
		if err != nil || resp.Code != coap.Content {
			t.Fatalf("the other client's local GET %d: %v %v", i, resp, err)
		}
	}
	if err := p.Probe(ctx); err != nil {
		t.Fatalf("the probe failed while one client had its share in flight: %v", err)
	}
	// The flooder itself still gets the proxy's own resources.
	resp, err := clientOn(t, "127.0.0.2").Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: wellKnown})
	if err != nil || resp.Code != coap.Content {
		t.Fatalf("the flooder's local GET: %v %v", resp, err)
	}
	if s := p.servers[0].Stats(); s.Inflight != 8 || s.ClientBusy != 8 || s.Local < 22 {
		t.Fatalf("at the end: Inflight %d, ClientBusy %d, Local %d; want the flood's 8 still held, 8, and the 22 local requests", s.Inflight, s.ClientBusy, s.Local)
	}
}

// Once the forwarding pool is full — here by two clients at their shares —
// forwarded requests get 5.03, but local requests and the watchdog's probe
// never wait on it.
func TestLocalRequestsAndTheProbeNeverWaitOnTheForwardingPool(t *testing.T) {
	silent := silentOrigin(t)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Clients = []string{"127.0.0.0/8"}
		c.Proxy.Allow = []string{"127.0.0.0/8"}
		c.Proxy.Timeout = Duration{30 * time.Second}
		c.Proxy.MaxInflight = 8
		c.Proxy.MaxInflightPerClient = 4
	})
	for _, ip := range []string{"127.0.0.2", "127.0.0.4"} {
		flood := &spoofer{t: t, ip: ip}
		for i := range 4 {
			flood.send(p, fmt.Sprintf("coap://%v/%s/%d", silent, ip, i))
		}
	}
	waitInflight(t, p, 8)
	other := clientOn(t, "127.0.0.3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := other.Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://%v/x", silent))})
	if age, _ := resp.Options.Uint(coap.MaxAge); err != nil || resp.Code != coap.ServiceUnavailable || age != 1 {
		t.Fatalf("a forwarded GET with the pool full: %v %v, want 5.03 with Max-Age 1", resp, err)
	}
	for i := range 10 {
		resp, err := other.Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: wellKnown})
		if err != nil || resp.Code != coap.Content {
			t.Fatalf("local GET %d with the pool full: %v %v", i, resp, err)
		}
		if err := p.Probe(ctx); err != nil {
			t.Fatalf("probe %d with the pool full: %v", i, err)
		}
	}
	if s := p.servers[0].Stats(); s.Busy != 1 || s.Inflight != 8 {
		t.Fatalf("Busy %d, Inflight %d; want 1 and the flood's 8", s.Busy, s.Inflight)
	}
}
