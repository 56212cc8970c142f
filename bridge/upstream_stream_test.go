package bridge

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// libcoapOrigin runs libcoap's OpenSSL coap-server on 127.0.0.1 with
// args (its keys). It serves UDP and TCP on the port it returns, DTLS and
// TLS on the one after.
func libcoapOrigin(t *testing.T, args ...string) int {
	t.Helper()
	bin, err := exec.LookPath("coap-server-openssl")
	if err != nil {
		t.Fatalf("coap-server-openssl (Debian libcoap3-bin) is needed: %v", err)
	}
	port := freePortPair(t)
	cmd := exec.Command(bin, append([]string{"-A", "127.0.0.1", "-p", fmt.Sprint(port), "-v", "0", "-d", "10"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "coap-server answering", func() bool {
		out, _ := exec.Command("coap-client-notls", "-B", "1", fmt.Sprintf("coap+tcp://127.0.0.1:%d/", port)).CombinedOutput()
		return strings.Contains(string(out), "libcoap")
	}, func() string { return "" })
	return port
}

// freePortPair finds two consecutive ports free for TCP and UDP.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(30000)
		var closers []func() error
		ok := true
		for _, q := range []int{p, p + 1} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, l.Close)
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, u.Close)
		}
		for _, c := range closers {
			c()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no two free ports")
	return 0
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// getVia asks the proxy, over UDP, for uri.
func getVia(t *testing.T, p *Proxy, uri string) *coap.Message {
	t.Helper()
	return do(t, client(t), p, &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: proxyURI(uri)})
}

// libcoap's coap-server as the origin over coap+tcp, reached by a UDP
// client: one connection serves every request to it (pooled), and
// libcoap's coap-client over coap+tcp reaches it through the TCP
// listener (TCP on both sides).
func TestLibcoapOriginOverTCP(t *testing.T) {
	port := libcoapOrigin(t)
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0")
	uri := fmt.Sprintf("coap+tcp://127.0.0.1:%d/", port)
	for i := range 3 {
		resp := getVia(t, p, uri)
		if resp.Code != coap.Content || !strings.Contains(string(resp.Payload), "libcoap") {
			t.Fatalf("request %d: %v %q", i, resp.Code, resp.Payload)
		}
	}
	if st := p.streamUp.cl.Stats(); st.Accepted != 1 || st.Conns != 1 {
		t.Fatalf("origin connections: %d dialled, %d open; want one, reused", st.Accepted, st.Conns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// PUT then GET, TCP client to TCP origin.
	proxy := "coap+tcp://" + p.StreamAddrs()[0].String()
	target := fmt.Sprintf("coap+tcp://127.0.0.1:%d/made", port)
	if out, err := exec.CommandContext(ctx, "coap-client-notls", "-m", "put", "-e", "over-tcp", "-P", proxy, target).CombinedOutput(); err != nil {
		t.Fatalf("PUT: %v %q", err, out)
	}
	out, err := exec.CommandContext(ctx, "coap-client-notls", "-m", "get", "-P", proxy, target).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "over-tcp" {
		t.Fatalf("GET: %v %q", err, out)
	}
}

// coaps:// origins over DTLS with a pre-shared key (RFC 7252 §9.1.3.1)
// from [[origin]]; a wrong key is a 5.02 with a diagnostic, not a
// timeout; a session is reused by the next requests.
func TestLibcoapOriginOverDTLSWithPSK(t *testing.T) {
	port := libcoapOrigin(t, "-k", "secret-key", "-h", "")
	uri := fmt.Sprintf("coaps://127.0.0.1:%d/", port+1)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Origin = []OriginConfig{{URI: fmt.Sprintf("coaps://127.0.0.1:%d", port+1), PSKFile: writeTemp(t, "psk", "gw:secret-key\n")}}
	})
	for i := range 2 {
		resp := getVia(t, p, uri)
		if resp.Code != coap.Content || !strings.Contains(string(resp.Payload), "libcoap") {
			t.Fatalf("request %d: %v %q", i, resp.Code, resp.Payload)
		}
	}
	if n := p.dtlsUp.pool.len(); n != 1 {
		t.Fatalf("%d DTLS sessions, want 1", n)
	}

	// The proxy would wait 30 s for an origin; the handshake gives up
	// after 2 s, which is what makes the 5.02 prompt.
	wrong := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{30 * time.Second}
		c.Origin = []OriginConfig{{URI: fmt.Sprintf("coaps://127.0.0.1:%d", port+1), PSKFile: writeTemp(t, "psk", "gw:wrong-key\n")}}
	})
	start := time.Now()
	resp := getVia(t, wrong, uri)
	if resp.Code != coap.BadGateway || !strings.Contains(string(resp.Payload), "DTLS handshake: no answer in 2s") {
		t.Fatalf("wrong key: %v %q, want 5.02 naming the handshake", resp.Code, resp.Payload)
	}
	t.Logf("wrong key answered in %v: %q", time.Since(start), resp.Payload)
	// Within the backoff the next request is answered at once, without a
	// handshake of its own.
	resp = getVia(t, wrong, uri)
	if resp.Code != coap.BadGateway {
		t.Fatalf("second request: %v", resp.Code)
	}
	if n := metricValue(t, wrong, "gatewayd_origin_dial_failures_total", "dtls"); n != 1 {
		t.Fatalf("gatewayd_origin_dial_failures_total{dtls} %v, want the one handshake that failed", n)
	}
}

// coaps:// and coaps+tcp:// origins with certificates: gatewayd checks the
// origin's against ca_file and presents its own client certificate, which
// the origin requires; without ca_file the origin's certificate is not
// trusted: 5.02.
func TestLibcoapOriginsWithCertificates(t *testing.T) {
	pki := testpeer.NewPKI(t)
	port := libcoapOrigin(t, "-c", pki.File("server.pem"), "-j", pki.File("server.key"), "-C", pki.File("ca.pem"))
	origin := func(scheme string) OriginConfig {
		return OriginConfig{URI: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port+1),
			CertFile: pki.File("client.pem"), KeyFile: pki.File("client.key"), CAFile: pki.File("ca.pem")}
	}
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Origin = []OriginConfig{origin("coaps"), origin("coaps+tcp")}
	})
	for _, scheme := range []string{"coaps", "coaps+tcp"} {
		t.Run(scheme, func(t *testing.T) {
			resp := getVia(t, p, fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port+1))
			if resp.Code != coap.Content || !strings.Contains(string(resp.Payload), "libcoap") {
				t.Fatalf("%v %q", resp.Code, resp.Payload)
			}
		})
	}
	untrusting := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{10 * time.Second} })
	for _, scheme := range []string{"coaps", "coaps+tcp"} {
		resp := getVia(t, untrusting, fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port+1))
		if resp.Code != coap.BadGateway {
			t.Fatalf("%s without ca_file: %v %q, want 5.02", scheme, resp.Code, resp.Payload)
		}
	}
}

// startStreamOrigin serves h over WebSockets (ws) or TCP with package
// stream.
func startStreamOrigin(t *testing.T, h coap.Handler, ws bool) (netip.AddrPort, *stream.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := stream.NewServer(stream.Config{Handler: h})
	if ws {
		err = s.ServeWS(l, "/.well-known/coap", nil)
	} else {
		err = s.Serve(l, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return l.Addr().(*net.TCPAddr).AddrPort(), s
}

// An origin over coap+ws: the path goes in Uri-Path over the origin's
// /.well-known/coap endpoint (RFC 8323 §8.3); a UDP and a TCP observer
// share one upstream observation, which ends for both with a 5.02 when
// the origin's connection closes (§7.4) rather than going silent.
func TestWebSocketOriginObservedFromUDPAndTCP(t *testing.T) {
	origin := &observableOrigin{}
	addr, srv := startStreamOrigin(t, origin, true)
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0")
	uri := fmt.Sprintf("coap+ws://%v/obs", addr)
	if resp := getVia(t, p, uri); resp.Code != coap.Content || string(resp.Payload) != "v000;" {
		t.Fatalf("GET: %v %q", resp.Code, resp.Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	udp := client(t)
	uch := make(chan *coap.Message, 10)
	if _, _, err := udp.Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(uri)}, func(m *coap.Message) { uch <- m.Clone() }); err != nil {
		t.Fatal(err)
	}
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	c := dialStream(t, cl, "tcp", p.StreamAddrs()[0], nil)
	tch := make(chan *coap.Message, 10)
	if _, _, err := c.Observe(ctx, &coap.Message{Code: coap.GET, Options: proxyURI(uri)}, func(m *coap.Message) { tch <- m.Clone() }); err != nil {
		t.Fatal(err)
	}
	if st := p.Hub().Stats(); st.Upstreams != 1 || st.Observers != 2 {
		t.Fatalf("hub: %d upstream observations, %d observers", st.Upstreams, st.Observers)
	}
	origin.notify()
	for name, ch := range map[string]chan *coap.Message{"udp": uch, "tcp": tch} {
		select {
		case m := <-ch:
			if string(m.Payload) != "v001;" {
				t.Fatalf("%s: %q", name, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("%s: no notification", name)
		}
	}
	srv.Close()
	for name, ch := range map[string]chan *coap.Message{"udp": uch, "tcp": tch} {
		select {
		case m := <-ch:
			if m.Code != coap.BadGateway {
				t.Fatalf("%s: %v %q, want the 5.02 that ends the observation", name, m.Code, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("%s: the origin's connection closed, and the observer heard nothing", name)
		}
	}
	waitFor(t, "the hub's observation ended", func() bool { return p.Hub().Stats().Upstreams == 0 }, func() string { return fmt.Sprintf("%+v", p.Hub().Stats()) })
}

// coaps+ws both ways: a client over wss:// (WebSockets over TLS) reaches
// a coaps+ws origin whose certificate gatewayd checks against the
// [[origin]]'s ca_file; without it the origin is not trusted: 5.02.
func TestSecureWebSocketsBothWays(t *testing.T) {
	pki := testpeer.NewPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := stream.NewServer(stream.Config{Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if !r.Secure {
			return coap.Errorf(coap.Forbidden, "not over TLS")
		}
		return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: []byte("over wss")})
	})})
	if err := srv.ServeWS(l, "/.well-known/coap", &tls.Config{Certificates: []tls.Certificate{pki.Server}}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	uri := fmt.Sprintf("coaps+ws://%v/x", l.Addr())
	p := startStreamProxy(t, func(c *Config) {
		c.Proxy.CertFile, c.Proxy.KeyFile = pki.File("server.pem"), pki.File("server.key")
		c.Origin = []OriginConfig{{URI: fmt.Sprintf("coaps+ws://%v", l.Addr()), CAFile: pki.File("ca.pem")}}
	}, "wss://127.0.0.1:0")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.CA}}}
	c, err := cl.DialWS(ctx, "wss://"+p.StreamAddrs()[0].String()+"/.well-known/coap", hc)
	if err != nil {
		t.Fatal(err)
	}
	resp := doStream(t, c, &coap.Message{Code: coap.GET, Options: proxyURI(uri)})
	if resp.Code != coap.Content || string(resp.Payload) != "over wss" {
		t.Fatalf("%v %q", resp.Code, resp.Payload)
	}
	untrusting := startProxy(t, nil)
	if resp := getVia(t, untrusting, uri); resp.Code != coap.BadGateway {
		t.Fatalf("without ca_file: %v %q, want 5.02", resp.Code, resp.Payload)
	}
}
