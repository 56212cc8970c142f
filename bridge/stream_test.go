package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// startStreamProxy runs the proxy with a UDP listener first and the
// given stream listeners after it.
func startStreamProxy(t *testing.T, mod func(*Config), listen ...string) *Proxy {
	t.Helper()
	return startProxy(t, func(c *Config) {
		c.Proxy.Listen = append([]string{"udp://127.0.0.1:0"}, listen...)
		if mod != nil {
			mod(c)
		}
	})
}

func dialStream(t *testing.T, cl *stream.Client, scheme string, addr netip.AddrPort, tc *tls.Config) *stream.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c *stream.Conn
	var err error
	switch scheme {
	case "tcp":
		c, err = cl.Dial(ctx, addr.String(), nil)
	case "tls":
		c, err = cl.Dial(ctx, addr.String(), tc)
	case "ws":
		c, err = cl.DialWS(ctx, "ws://"+addr.String()+"/.well-known/coap", nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func doStream(t *testing.T, c *stream.Conn, req *coap.Message) *coap.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A request over TCP and over WebSockets reaches a UDP origin with
// Proxy-Uri split as over UDP (PR1.1), and its response comes back
// unmodified (PR1.3).
func TestStreamListenersForwardToUDPOrigin(t *testing.T) {
	o := newRecorder(t, content("22.5 C"))
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	for i, scheme := range []string{"tcp", "ws"} {
		t.Run(scheme, func(t *testing.T) {
			c := dialStream(t, cl, scheme, p.StreamAddrs()[i], nil)
			req := &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://%v/sensors/%s", o.addr, scheme))}
			resp := doStream(t, c, req)
			in, out := o.last(t)
			mustVerify(t, req, in, out, resp)
			if string(resp.Payload) != "22.5 C" {
				t.Fatalf("payload %q", resp.Payload)
			}
		})
	}
}

// libcoap's coap-client over coap+tcp through gatewayd to a UDP origin.
func TestLibcoapTCPClientThroughProxy(t *testing.T) {
	o := newRecorder(t, content("from udp"))
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "coap-client-notls", "-m", "get", "-B", "10",
		"-P", "coap+tcp://"+p.StreamAddrs()[0].String(), fmt.Sprintf("coap://%v/x", o.addr)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "from udp" {
		t.Fatalf("coap-client: %v: %q", err, out)
	}
	if o.count() != 1 {
		t.Fatalf("origin saw %d requests", o.count())
	}
}

// libcoap's OpenSSL client over coaps+tcp with a client certificate;
// without one, client_ca_file makes the handshake fail.
func TestLibcoapTLSClientThroughProxy(t *testing.T) {
	o := newRecorder(t, content("over tls"))
	pki := testpeer.NewPKI(t)
	p := startStreamProxy(t, func(c *Config) {
		c.Proxy.CertFile, c.Proxy.KeyFile, c.Proxy.ClientCAFile = pki.File("server.pem"), pki.File("server.key"), pki.File("ca.pem")
	}, "tls://127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proxy := "coaps+tcp://" + p.StreamAddrs()[0].String()
	target := fmt.Sprintf("coap://%v/x", o.addr)
	out, err := exec.CommandContext(ctx, "coap-client-openssl", "-m", "get", "-B", "10",
		"-c", pki.File("client.pem"), "-j", pki.File("client.key"), "-C", pki.File("ca.pem"),
		"-P", proxy, target).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "over tls") {
		t.Fatalf("coap-client-openssl: %v: %q", err, out)
	}
	out, _ = exec.CommandContext(ctx, "coap-client-openssl", "-m", "get", "-B", "3",
		"-C", pki.File("ca.pem"), "-P", proxy, target).CombinedOutput()
	if strings.Contains(string(out), "over tls") {
		t.Fatalf("a client without a certificate was served: %q", out)
	}
	if o.count() != 1 {
		t.Fatalf("origin saw %d requests, want 1", o.count())
	}
}

// A certificate client over TLS is named cn:<common name>, as over DTLS,
// and its requests are coaps (Request.Secure).
func TestTLSListenerServesGoClientWithCertificate(t *testing.T) {
	pki := testpeer.NewPKI(t)
	p := startStreamProxy(t, func(c *Config) {
		c.Proxy.CertFile, c.Proxy.KeyFile, c.Proxy.ClientCAFile = pki.File("server.pem"), pki.File("server.key"), pki.File("ca.pem")
	}, "tls://127.0.0.1:0", "wss://127.0.0.1:0")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	tc := &tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pki.Client}}
	c := dialStream(t, cl, "tls", p.StreamAddrs()[0], tc)
	resp := doStream(t, c, &coap.Message{Code: coap.GET, Options: coap.Options{}.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))})
	if resp.Code != coap.Content {
		t.Fatalf("got %v", resp.Code)
	}
	// A client without a certificate is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Dial(ctx, p.StreamAddrs()[0].String(), &tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1"}); err == nil {
		// TLS 1.3 reports the refusal on the first read.
		c2, _ := cl.Dial(ctx, p.StreamAddrs()[0].String(), &tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1"})
		if c2 != nil {
			if _, err := c2.Do(ctx, &coap.Message{Code: coap.GET}); err == nil {
				t.Fatal("a client without a certificate was served")
			}
		}
	}
}

// Each TLS listener negotiates its own ALPN identifier: "coap" for
// coaps+tcp (RFC 8323 §8.2), "http/1.1" for wss, a WebSocket being an
// HTTP/1.1 upgrade (RFC 6455 §4.1). A client offering what browsers offer
// (h2, http/1.1) completes the wss handshake and is served, and keeps
// doing so after a reload renews the keys; offering only coap to the wss
// listener fails.
func TestTLSListenersNegotiateCoapAndWebSocketsHTTP11(t *testing.T) {
	o := newRecorder(t, content("over wss"))
	pki := testpeer.NewPKI(t)
	p := startStreamProxy(t, func(c *Config) {
		c.Proxy.CertFile, c.Proxy.KeyFile = pki.File("server.pem"), pki.File("server.key")
	}, "tls://127.0.0.1:0", "wss://127.0.0.1:0")
	tlsAddr, wssAddr := p.StreamAddrs()[0].String(), p.StreamAddrs()[1].String()
	alpn := func(addr string, offer ...string) (string, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1", NextProtos: offer})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().NegotiatedProtocol, nil
	}
	browser := []string{"h2", "http/1.1"}
	check := func(when string) {
		t.Helper()
		if got, err := alpn(tlsAddr, "coap"); err != nil || got != "coap" {
			t.Errorf("%s: tls:// negotiated %q (%v), want coap", when, got, err)
		}
		if got, err := alpn(wssAddr, browser...); err != nil || got != "http/1.1" {
			t.Errorf("%s: wss:// with a browser's offer negotiated %q (%v), want http/1.1", when, got, err)
		}
		if got, err := alpn(wssAddr, "coap"); err == nil {
			t.Errorf("%s: wss:// negotiated %q with a client offering only coap, want a failed handshake", when, got)
		}
	}
	check("at start")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.CA, NextProtos: browser}}}
	c, err := cl.DialWS(ctx, "wss://"+wssAddr+"/.well-known/coap", hc)
	if err != nil {
		t.Fatal(err)
	}
	resp := doStream(t, c, &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://%v/x", o.addr))})
	if resp.Code != coap.Content || string(resp.Payload) != "over wss" {
		t.Fatalf("over wss: %v %q", resp.Code, resp.Payload)
	}
	if _, err := p.Reload(p.cfg); err != nil {
		t.Fatal(err)
	}
	check("after a reload")
}

// Observers over UDP, TCP and WebSockets of one resource share one
// upstream observation (RFC 7641 §5); each gets every state in order
// over its transport; a stream observer whose connection closes leaves
// at once (RFC 8323 §7.4), without waiting for a notification.
func TestObserversOverUDPTCPAndWebSocketsShareOneUpstream(t *testing.T) {
	origin, uri := observableServer(t)
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type seen struct {
		name string
		ch   chan string
	}
	var all []seen
	udp := client(t)
	uch := make(chan string, 100)
	first, _, err := udp.Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(uri)}, func(m *coap.Message) { uch <- string(m.Payload) })
	if err != nil || !first.Options.Has(coap.Observe) {
		t.Fatalf("UDP registration: %v %v", first, err)
	}
	all = append(all, seen{"udp", uch})
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	var conns []*stream.Conn
	for i, scheme := range []string{"tcp", "ws"} {
		c := dialStream(t, cl, scheme, p.StreamAddrs()[i], nil)
		ch := make(chan string, 100)
		first, cancelObs, err := c.Observe(ctx, &coap.Message{Code: coap.GET, Options: proxyURI(uri)}, func(m *coap.Message) { ch <- string(m.Payload) })
		if err != nil || cancelObs == nil {
			t.Fatalf("%s registration: %v %v", scheme, first, err)
		}
		if string(first.Payload) != "v000;" {
			t.Fatalf("%s first %q", scheme, first.Payload)
		}
		all = append(all, seen{scheme, ch})
		conns = append(conns, c)
	}
	if got := p.Hub().Stats(); got.Upstreams != 1 || got.Observers != 3 {
		t.Fatalf("hub: %d upstream observations, %d observers; want 1 and 3", got.Upstreams, got.Observers)
	}
	origin.mu.Lock()
	regs := origin.regs
	origin.mu.Unlock()
	if regs != 1 {
		t.Fatalf("origin saw %d registrations", regs)
	}
	// Notifications one at a time: each observer gets each state.
	for v := 1; v <= 5; v++ {
		origin.notify()
		want := fmt.Sprintf("v%03d;", v)
		for _, s := range all {
			select {
			case got := <-s.ch:
				if got != want {
					t.Fatalf("%s got %q, want %q", s.name, got, want)
				}
			case <-ctx.Done():
				t.Fatalf("%s missed %q", s.name, want)
			}
		}
	}
	// The TCP client goes away without deregistering.
	conns[0].Close()
	waitFor(t, "the TCP observer removed", func() bool { return p.Hub().Stats().Observers == 2 }, func() string { return fmt.Sprintf("%+v", p.Hub().Stats()) })
}

// Over TCP a client's address was verified by the handshake: an Observe
// registration is served without the Echo challenge that an unverified
// UDP address gets (RFC 9175 §2.4).
func TestStreamClientsNeedNoEchoChallenge(t *testing.T) {
	_, uri := observableServer(t)
	p := startStreamProxy(t, func(c *Config) { c.Proxy.Verified = nil }, "tcp://127.0.0.1:0")
	req := &coap.Message{Code: coap.GET, Options: proxyURI(uri).SetUint(coap.Observe, 0)}
	udp := client(t)
	if resp := do(t, udp, p, req); resp.Code != coap.Unauthorized {
		t.Fatalf("UDP from an unverified address got %v, want the 4.01 challenge (the test's premise)", resp.Code)
	}
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	c := dialStream(t, cl, "tcp", p.StreamAddrs()[0], nil)
	resp := doStream(t, c, req)
	if resp.Code != coap.Content || !resp.Options.Has(coap.Observe) {
		t.Fatalf("TCP got %v, want 2.05 with Observe", resp.Code)
	}
}

// The protected messages of RFC 8613 Appendix C.4–C.6 sent by a TCP
// client reach a UDP origin with every protected byte intact, and the
// protected response C.7 comes back byte-exact inside (RFC 8613 §1:
// only the messaging layer differs; the guard's Verify checks the rest).
func TestOSCOREFromTCPClientToUDPOriginByteExact(t *testing.T) {
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	hx := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	rb := hx("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106")
	var vresp coap.Message
	if err := vresp.Decode(rb); err != nil {
		t.Fatal(err)
	}
	o := newRecorder(t, func(*coap.Message) *coap.Message { return vresp.Clone() })
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	c := dialStream(t, cl, "tcp", p.StreamAddrs()[0], nil)
	for name, qb := range map[string][]byte{
		"C.4": hx("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"),
		"C.5": hx("440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0"),
		"C.6": hx("44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3"),
	} {
		t.Run(name, func(t *testing.T) {
			var vreq coap.Message
			if err := vreq.Decode(qb); err != nil {
				t.Fatal(err)
			}
			req := vreq.Clone()
			req.Type, req.MID = 0, 0 // a stream has neither
			req.Options = req.Options.SetUint(coap.URIPort, uint32(o.addr.Port())).Insert(coap.ProxyScheme, []byte("coap"))
			resp := doStream(t, c, req)
			in, out := o.last(t)
			mustVerify(t, req, in, out, resp)
			oscIn, _ := in.Options.Get(coap.OSCORE)
			oscV, _ := vreq.Options.Get(coap.OSCORE)
			if !bytes.Equal(oscIn, oscV) || !bytes.Equal(in.Payload, vreq.Payload) {
				t.Fatal("OSCORE option or ciphertext changed on the way to the origin")
			}
			// Everything after the header, the outer options and the
			// ciphertext, is the vector's: only the framing changed.
			got, _ := stream.AppendFrame(nil, resp, false)
			hdr := stream.HeaderLen(got[0])
			if !bytes.Equal(got[hdr+len(resp.Token):], rb[4+len(vresp.Token):]) {
				t.Fatalf("response changed:\n got %x\nwant %x", got, rb)
			}
		})
	}
}

// Config: each stream scheme is accepted with its bounds, and what it
// needs is checked.
func TestStreamListenConfig(t *testing.T) {
	for _, tt := range []struct {
		listen, want string
		mod          func(*ProxyConfig)
	}{
		{listen: "tcp://127.0.0.1:5683"},
		{listen: "ws://127.0.0.1:8080"},
		{listen: "ws://127.0.0.1:8080/coap"},
		{listen: "tls://127.0.0.1:5684", want: "cert_file: a tls address"},
		{listen: "wss://127.0.0.1:443", want: "cert_file: a wss address"},
		{listen: "tcp://127.0.0.1:5683/x", want: "want tcp://ip:port"},
		{listen: "sctp://127.0.0.1:5683", want: "scheme must be"},
		{listen: "tcp://127.0.0.1:5683", want: "keepalive", mod: func(p *ProxyConfig) { p.Keepalive = Duration{time.Millisecond} }},
		{listen: "tcp://127.0.0.1:5683", want: "max_message_size", mod: func(p *ProxyConfig) { p.MaxMessageSize = 10 }},
		{listen: "tcp://127.0.0.1:5683", want: "max_handshakes", mod: func(p *ProxyConfig) { p.MaxHandshakes = p.MaxConnections + 1 }},
		{listen: "ws://127.0.0.1:8080", want: "ws_origins", mod: func(p *ProxyConfig) { p.WSOrigins = []string{"["} }},
	} {
		t.Run(tt.listen+tt.want, func(t *testing.T) {
			c := Defaults()
			c.Proxy.Listen = []string{tt.listen}
			if tt.mod != nil {
				tt.mod(&c.Proxy)
			}
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// libcoap's coap-client over coap+tcp with keepalive (-K 1): it sends its
// CSM first and, while its observation is quiet, Pings, which gatewayd
// answers with Pongs (RFC 8323 §5.4) and counts; the client keeps its
// observation and gets the notification sent after its Pings.
func TestLibcoapTCPClientPingsAreAnswered(t *testing.T) {
	origin, uri := observableServer(t)
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc := testpeer.StartLibcoap(ctx, t, 0, "-m", "get", "-s", "6", "-K", "1",
		"-P", "coap+tcp://"+p.StreamAddrs()[0].String(), uri)
	waitFor(t, "two Pings answered", func() bool { return p.streams[0].s.Stats().Pings >= 2 }, lc.Log)
	origin.notify()
	waitFor(t, "the notification after the Pings", func() bool { return strings.Contains(lc.Payloads(), "v001;") }, lc.Log)
	if err := lc.Wait(); err != nil {
		t.Fatalf("coap-client: %v\n%s", err, lc.Log())
	}
}
