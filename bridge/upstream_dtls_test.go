package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/pion/dtls/v3"
)

// startDTLSOrigin serves h over DTLS with the pre-shared key "secret-key"
// on a port of 127.0.0.1, and returns its address and a channel that
// yields each session it accepted, once its handshake is done.
func startDTLSOrigin(t *testing.T, h coap.Handler) (netip.AddrPort, <-chan *dtlsSession) {
	t.Helper()
	l, err := dtls.Listen("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &dtls.Config{
		PSK:          func([]byte) ([]byte, error) { return []byte("secret-key"), nil },
		CipherSuites: []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8},
	})
	if err != nil {
		t.Fatal(err)
	}
	sessions := make(chan *dtlsSession, 4)
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		<-done
		close(sessions)
		for s := range sessions {
			s.e.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dc := c.(*dtls.Conn)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = dc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				dc.Close()
				continue
			}
			s := &dtlsSession{c: dc, peer: c.RemoteAddr().(*net.UDPAddr).AddrPort()}
			s.ctx, s.end = context.WithCancel(context.Background())
			s.e = coap.NewEndpoint(s, coap.EndpointConfig{Handler: h})
			sessions <- s
		}
	}()
	return l.Addr().(*net.UDPAddr).AddrPort(), sessions
}

// An observation of a coaps origin ends when its DTLS session does (the
// origin closed it: close_notify, RFC 6347 §4.1.2.7 by way of TLS's
// alerts): the observers hear a final 5.02 at once rather than waiting
// for notifications that cannot come, the hub's upstream observation
// ends, and the observation's lease on the session is given back.
func TestCoapsObservationEndsWithItsSession(t *testing.T) {
	origin := &observableOrigin{}
	addr, sessions := startDTLSOrigin(t, origin)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Origin = []OriginConfig{{URI: fmt.Sprintf("coaps://%v", addr), PSKFile: writeTemp(t, "psk", "gw:secret-key\n")}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := make(chan *coap.Message, 10)
	resp, _, err := client(t).Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coaps://%v/obs", addr))}, func(m *coap.Message) { ch <- m.Clone() })
	if err != nil || resp.Code != coap.Content || !resp.Options.Has(coap.Observe) {
		t.Fatalf("registration: %v, %v", resp, err)
	}
	var s *dtlsSession
	select {
	case s = <-sessions:
	case <-ctx.Done():
		t.Fatal("the origin accepted no session")
	}
	origin.notify()
	select {
	case m := <-ch:
		if m.Code != coap.Content || string(m.Payload) != "v001;" {
			t.Fatalf("notification: %v %q", m.Code, m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("no notification")
	}
	if n := metricValue(t, p, "gatewayd_origin_connections", "dtls"); n != 1 {
		t.Fatalf("gatewayd_origin_connections{dtls} %v, want the one session", n)
	}

	s.e.Close() // closes the origin's side of the session
	select {
	case m := <-ch:
		if m.Code != coap.BadGateway {
			t.Fatalf("%v %q, want the 5.02 that ends the observation", m.Code, m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("the origin closed the session, and the observer heard nothing")
	}
	waitFor(t, "the hub's observation ended", func() bool { return p.Hub().Stats().Upstreams == 0 }, func() string { return fmt.Sprintf("%+v", p.Hub().Stats()) })
	waitFor(t, "the pool let the session go", func() bool { return p.dtlsUp.pool.Stats().Conns == 0 }, func() string { return fmt.Sprintf("%+v", p.dtlsUp.pool.Stats()) })

	// A new registration dials a new session.
	resp, _, err = client(t).Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coaps://%v/obs", addr))}, func(*coap.Message) {})
	if err != nil || resp.Code != coap.Content {
		t.Fatalf("registration after the session ended: %v, %v", resp, err)
	}
	if n := metricValue(t, p, "gatewayd_origin_dials_total", "dtls"); n != 2 {
		t.Fatalf("gatewayd_origin_dials_total{dtls} %v, want a second session", n)
	}
}
