package bridge

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// recorder is an origin server that keeps what it receives and answers
// with a fixed response.
type recorder struct {
	addr netip.AddrPort
	mu   sync.Mutex
	got  []*coap.Message // guarded by mu
	resp func(*coap.Message) *coap.Message
	sent []*coap.Message // guarded by mu
}

func newRecorder(t testing.TB, resp func(*coap.Message) *coap.Message) *recorder {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{addr: u.LocalAddr(), resp: resp}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		out := r.resp(req.Msg)
		r.mu.Lock()
		r.got = append(r.got, req.Msg.Clone())
		r.sent = append(r.sent, out)
		r.mu.Unlock()
		return w.WriteResponse(out)
	})})
	t.Cleanup(func() { e.Close() })
	return r
}

func (r *recorder) last(t *testing.T) (in, out *coap.Message) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		t.Fatal("origin received nothing")
	}
	return r.got[len(r.got)-1], r.sent[len(r.sent)-1]
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func content(payload string) func(*coap.Message) *coap.Message {
	return func(*coap.Message) *coap.Message {
		m := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0).Insert(coap.ETag, []byte{1, 2, 3}).SetUint(coap.MaxAge, 30)
		return m
	}
}

func startProxy(t testing.TB, mod func(*Config)) *Proxy {
	t.Helper()
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Proxy.Timeout = Duration{time.Second}
	cfg.Proxy.Name = "gw-test"
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func client(t *testing.T) *coap.Endpoint {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{})
	t.Cleanup(func() { e.Close() })
	return e
}

func do(t *testing.T, c *coap.Endpoint, p *Proxy, req *coap.Message) *coap.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, p.Addrs()[0], req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func proxyURI(uri string) coap.Options {
	return coap.Options(nil).Insert(coap.ProxyURI, []byte(uri))
}

// mustVerify asserts PR1.1–PR1.3 on a forwarded request and its response.
func mustVerify(t *testing.T, sentReq, gotReq, sentResp, gotResp *coap.Message) {
	t.Helper()
	if err := Verify(sentReq, gotReq); err != nil {
		t.Errorf("request: %v", err)
	}
	if err := Verify(sentResp, gotResp); err != nil {
		t.Errorf("response (PR1.3): %v", err)
	}
}

func TestPR1_1ProxyURIIsSplitIntoURIOptions(t *testing.T) {
	o := newRecorder(t, content("22.5"))
	p := startProxy(t, nil)
	c := client(t)
	for _, code := range []coap.Code{coap.GET, coap.PUT, coap.POST, coap.DELETE} {
		t.Run(code.String(), func(t *testing.T) {
			req := &coap.Message{Code: code, Options: proxyURI("coap://" + o.addr.String() + "/a/b%2Fc?x=1&y")}
			req.Options = req.Options.SetUint(coap.ContentFormat, 0)
			if code != coap.GET {
				req.Payload = []byte("body")
			}
			resp := do(t, c, p, req)
			in, out := o.last(t)
			mustVerify(t, req, in, out, resp)
			if in.Options.Has(coap.ProxyURI) {
				t.Fatal("Proxy-Uri must be removed when forwarding to the origin")
			}
			u := coap.URIFromOptions(in.Options, "coap", "127.0.0.1", 0)
			if strings.Join(u.Path, "|") != "a|b/c" || strings.Join(u.Query, "|") != "x=1|y" {
				t.Fatalf("origin got path %q query %q", u.Path, u.Query)
			}
			if in.Options.Has(coap.URIHost) || in.Options.Has(coap.URIPort) {
				t.Fatal("§6.4: no Uri-Host for an IP literal, no Uri-Port for the port sent to")
			}
			if hl, _ := in.Options.Uint(coap.HopLimit); hl != 15 {
				t.Fatalf("Hop-Limit at origin = %d, want 16 inserted and decremented", hl)
			}
		})
	}
}

func TestPR1_2ProxySchemeIsRemovedAndURIOptionsKept(t *testing.T) {
	o := newRecorder(t, content("x"))
	p := startProxy(t, nil)
	c := client(t)
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIHost, []byte("127.0.0.1")).
		SetUint(coap.URIPort, uint32(o.addr.Port())).
		Insert(coap.URIPath, []byte("t")).
		Insert(coap.ProxyScheme, []byte("coap"))
	resp := do(t, c, p, req)
	in, out := o.last(t)
	mustVerify(t, req, in, out, resp)
	if in.Options.Has(coap.ProxyScheme) {
		t.Fatal("Proxy-Scheme must be removed")
	}
	if h, _ := in.Options.Get(coap.URIHost); string(h) != "127.0.0.1" {
		t.Fatal("Uri-Host must be kept")
	}
}

func TestPR1_3ResponseIsForwardedUnmodified(t *testing.T) {
	weird := func(*coap.Message) *coap.Message {
		m := &coap.Message{Code: coap.NewCode(2, 7), Payload: []byte{0, 0xff, 1}}
		m.Options = m.Options.Insert(coap.ETag, []byte{9}).SetUint(coap.ContentFormat, 60).
			Insert(65001, []byte("unknown elective")).Insert(coap.LocationPath, []byte("x"))
		return m
	}
	o := newRecorder(t, weird)
	p := startProxy(t, nil)
	resp := do(t, client(t), p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + o.addr.String() + "/r")})
	_, out := o.last(t)
	if err := Verify(out, resp); err != nil {
		t.Fatal(err)
	}
}

func TestChainedThroughNextHopKeepsProxyURI(t *testing.T) {
	o := newRecorder(t, content("far"))
	second := startProxy(t, nil)
	first := startProxy(t, func(c *Config) { c.Proxy.NextHop = "coap://" + second.Addrs()[0].String() })
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + o.addr.String() + "/deep")}
	resp := do(t, client(t), first, req)
	if string(resp.Payload) != "far" {
		t.Fatalf("got %q", resp.Payload)
	}
	in, out := o.last(t)
	mustVerify(t, req, in, out, resp)
	if hl, _ := in.Options.Uint(coap.HopLimit); hl != 14 {
		t.Fatalf("Hop-Limit = %d after two proxies, want 14", hl)
	}
}

func TestReverseRouteRewritesPath(t *testing.T) {
	o := newRecorder(t, content("routed"))
	p := startProxy(t, func(c *Config) {
		c.Route = []RouteConfig{{Name: "node1", Target: "coap://" + o.addr.String() + "/base"}}
	})
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIPath, []byte("node1")).Insert(coap.URIPath, []byte("temp")).Insert(coap.URIQuery, []byte("u=c"))
	resp := do(t, client(t), p, req)
	if string(resp.Payload) != "routed" {
		t.Fatalf("got %v %q", resp.Code, resp.Payload)
	}
	in, _ := o.last(t)
	u := coap.URIFromOptions(in.Options, "coap", "", 0)
	if strings.Join(u.Path, "/") != "base/temp" || strings.Join(u.Query, "&") != "u=c" {
		t.Fatalf("origin got %v", u)
	}
}

func TestLocalResources(t *testing.T) {
	p := startProxy(t, func(c *Config) { c.Route = []RouteConfig{{Name: "n", Target: "coap://127.0.0.1:1"}} })
	c := client(t)
	wk := &coap.Message{Code: coap.GET}
	wk.Options = wk.Options.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))
	resp := do(t, c, p, wk)
	if resp.Code != coap.Content || !bytes.Contains(resp.Payload, []byte("</n>")) {
		t.Fatalf("/.well-known/core: %v %q", resp.Code, resp.Payload)
	}
	other := &coap.Message{Code: coap.GET}
	other.Options = other.Options.Insert(coap.URIPath, []byte("nothing"))
	if resp := do(t, c, p, other); resp.Code != coap.NotFound {
		t.Fatalf("unknown local path: %v", resp.Code)
	}
}

func TestProxyErrors(t *testing.T) {
	o := newRecorder(t, content("x"))
	dead := newRecorder(t, content("never"))
	p := startProxy(t, nil)
	c := client(t)
	silent, err := coap.ListenUDP(context.Background(), "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = dead
	tests := []struct {
		name string
		req  *coap.Message
		want coap.Code
	}{
		{"unknown scheme", &coap.Message{Code: coap.GET, Options: proxyURI("http://127.0.0.1/x")}, coap.ProxyingNotSupported},
		{"unknown scheme without a default port", &coap.Message{Code: coap.GET, Options: proxyURI("foo://127.0.0.1/x")}, coap.ProxyingNotSupported},
		{"disallowed target", &coap.Message{Code: coap.GET, Options: proxyURI("coap://192.0.2.1/x")}, coap.ProxyingNotSupported},
		{"bad Proxy-Uri", &coap.Message{Code: coap.GET, Options: proxyURI("coap://127.0.0.1/x#frag")}, coap.BadOption},
		{"unknown critical unsafe option", &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+o.addr.String()+"/x").Insert(2051, []byte{1})}, coap.BadOption},
		{"hop limit 1", &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+o.addr.String()+"/x").Insert(coap.HopLimit, []byte{1})}, coap.HopLimitReached},
		{"hop limit 0", &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+o.addr.String()+"/x").Insert(coap.HopLimit, []byte{0})}, coap.BadRequest},
		{"silent upstream", &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + silent.LocalAddr().String() + "/x")}, coap.GatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			resp := do(t, c, p, tt.req)
			if resp.Code != tt.want {
				t.Fatalf("got %v %q, want %v", resp.Code, resp.Payload, tt.want)
			}
			if tt.want == coap.GatewayTimeout && time.Since(start) > 5*time.Second {
				t.Fatalf("5.04 came after %v; timeout is 1 s", time.Since(start))
			}
		})
	}
	if o.count() != 0 {
		t.Fatalf("origin was contacted %d times by requests that must be refused", o.count())
	}
}

func TestUnknownSafeOptionTravelsUnchanged(t *testing.T) {
	o := newRecorder(t, content("x"))
	p := startProxy(t, nil)
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+o.addr.String()+"/x").Insert(2049, []byte("critical-safe")).Insert(65000, []byte("elective-safe"))}
	resp := do(t, client(t), p, req)
	in, out := o.last(t)
	mustVerify(t, req, in, out, resp)
}

func TestHopLimitLoopBetweenTwoProxiesEndsIn508(t *testing.T) {
	// a → b → a → b ...: each forwards everything to the other.
	pa, pb := freePort(t), freePort(t)
	a := startProxy(t, func(c *Config) {
		c.Proxy.Name, c.Proxy.Listen, c.Proxy.NextHop = "gw-a", []string{"udp://" + pa}, "coap://"+pb
	})
	startProxy(t, func(c *Config) {
		c.Proxy.Name, c.Proxy.Listen, c.Proxy.NextHop = "gw-b", []string{"udp://" + pb}, "coap://"+pa
	})
	resp := do(t, client(t), a, &coap.Message{Code: coap.GET, Options: proxyURI("coap://127.0.0.1:9/loop")})
	if resp.Code != coap.HopLimitReached {
		t.Fatalf("got %v, want 5.08", resp.Code)
	}
	ids := strings.Fields(string(resp.Payload))
	if len(ids) < 2 || ids[0] != "gw-a" {
		t.Fatalf("5.08 diagnostic %q: want the proxies' names, nearest first (RFC 8768 §4)", resp.Payload)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	return u.LocalAddr().String()
}

// The protected messages of RFC 8613 Appendix C.4–C.7 pass through the
// proxy with every protected byte intact.
func TestOSCOREVectorsPassByteExact(t *testing.T) {
	// The vectors name Uri-Host "localhost"; pin it to the test origin's
	// address family.
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	hx := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	requests := map[string][]byte{
		"C.4": hx("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"),
		"C.5": hx("440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0"),
		"C.6": hx("44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3"),
	}
	responses := map[string][]byte{
		"C.7":            hx("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"),
		"C.8 (with PIV)": hx("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"),
	}
	for rname, rb := range responses {
		var vresp coap.Message
		if err := vresp.Decode(rb); err != nil {
			t.Fatal(err)
		}
		o := newRecorder(t, func(*coap.Message) *coap.Message { return vresp.Clone() })
		p := startProxy(t, nil)
		c := client(t)
		for qname, qb := range requests {
			t.Run(qname+"/"+rname, func(t *testing.T) {
				var vreq coap.Message
				if err := vreq.Decode(qb); err != nil {
					t.Fatal(err)
				}
				// Through the proxy: Proxy-Scheme form, Uri-Host "localhost"
				// from the vector, Uri-Port for the test origin.
				req := vreq.Clone()
				req.Options = req.Options.SetUint(coap.URIPort, uint32(o.addr.Port())).Insert(coap.ProxyScheme, []byte("coap"))
				resp := do(t, c, p, req)
				in, out := o.last(t)
				mustVerify(t, req, in, out, resp)
				oscIn, _ := in.Options.Get(coap.OSCORE)
				oscV, _ := vreq.Options.Get(coap.OSCORE)
				if !bytes.Equal(oscIn, oscV) || !bytes.Equal(in.Payload, vreq.Payload) {
					t.Fatal("OSCORE option or ciphertext changed on the way to the origin")
				}
				// The response bytes, header aside, are the vector's.
				got, _ := resp.Marshal()
				if !bytes.Equal(got[4+len(resp.Token):], rb[4+len(vresp.Token):]) {
					t.Fatalf("response changed:\n got %x\nwant %x", got, rb)
				}
			})
		}
	}
}

func TestVerifyFindsChangesBeyondPR1(t *testing.T) {
	in := &coap.Message{Code: coap.POST, Payload: []byte{1, 2, 3}}
	in.Options = in.Options.Insert(coap.OSCORE, []byte{9}).Insert(coap.ProxyURI, []byte("coap://127.0.0.1/x"))
	cases := map[string]func(m *coap.Message){
		"payload":      func(m *coap.Message) { m.Payload = []byte{1, 2, 4} },
		"oscore value": func(m *coap.Message) { m.Options = m.Options.Set(coap.OSCORE, []byte{8}) },
		"code":         func(m *coap.Message) { m.Code = coap.FETCH },
		"added option": func(m *coap.Message) { m.Options = m.Options.SetUint(coap.MaxAge, 0) },
		"wrong path":   func(m *coap.Message) { m.Options = m.Options.Remove(coap.ProxyURI).Insert(coap.URIPath, []byte("y")) },
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			out := in.Clone()
			tamper(out)
			if err := Verify(in, out); !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify = %v, want ErrTampered", err)
			}
		})
	}
	ok := in.Clone()
	ok.Options = ok.Options.Remove(coap.ProxyURI).Insert(coap.URIPath, []byte("x")).Insert(coap.HopLimit, []byte{15})
	if err := Verify(in, ok); err != nil {
		t.Fatalf("an allowed rewrite was refused: %v", err)
	}
}

func TestRateLimitAnswers429WithMaxAge(t *testing.T) {
	o := newRecorder(t, content("x"))
	p := startProxy(t, func(c *Config) { c.Proxy.Rate = 1; c.Proxy.Burst = 2 })
	c := client(t)
	var codes []coap.Code
	for i := 0; i < 3; i++ {
		resp := do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + o.addr.String() + "/x")})
		codes = append(codes, resp.Code)
		if resp.Code == coap.TooManyRequests {
			if ma, ok := resp.Options.Uint(coap.MaxAge); !ok || ma < 1 {
				t.Fatal("4.29 needs Max-Age as a retry hint (RFC 8516 §2)")
			}
		}
	}
	if codes[0] != coap.Content || codes[1] != coap.Content || codes[2] != coap.TooManyRequests {
		t.Fatalf("codes %v, want 2.05 2.05 4.29", codes)
	}
}

func TestClientsOutsidePrefixesAreIgnored(t *testing.T) {
	p := startProxy(t, func(c *Config) { c.Proxy.Clients = []string{"10.0.0.0/8"} })
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a refused client must get no answer at all, got %v", err)
	}
	if p.servers[0].Stats().Refused == 0 {
		t.Fatal("refused datagrams must be counted")
	}
}

func TestMetricsAndStatusEndpoint(t *testing.T) {
	o := newRecorder(t, content("x"))
	p := startProxy(t, func(c *Config) {
		c.PubSub.Enabled = true
		c.PubSub.StateDir = t.TempDir()
	})
	addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := client(t)
	// Twice: the second count goes through the counter kept for GET 2.05.
	do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + o.addr.String() + "/m")})
	do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + o.addr.String() + "/n")})
	do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("http://127.0.0.1/")})
	// A request is counted when its exchange finishes, which may be just
	// after the client has its answer: sample once all three are.
	var body string
	testutil.Eventually(t, "the three requests counted", func() bool {
		body = httpGet(t, "http://"+addr+"/metrics")
		return strings.Contains(body, `gatewayd_requests_total{code="2.05",method="GET"} 2`) &&
			strings.Contains(body, `gatewayd_requests_total{code="5.05",method="GET"} 1`)
	})
	for _, want := range []string{
		`gatewayd_requests_total{code="2.05",method="GET"} 2`,
		`gatewayd_requests_total{code="5.05",method="GET"} 1`,
		`gatewayd_upstream_duration_seconds_count{transport="ip"} 2`,
		`gatewayd_upstream_duration_seconds_count{transport="radio"} 0`,
		`gatewayd_cache_misses_total `,
		`gatewayd_endpoint_datagrams_received_total{listen=`,
		`gatewayd_pubsub_topics 0`,
		`gatewayd_observe_observers 0`,
		`gatewayd_observe_refused_registrations_total 0`,
		`gatewayd_observe_expired_protected_observations_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if st := httpGet(t, "http://"+addr+"/status"); !strings.Contains(st, `"listen"`) || !strings.Contains(st, `"cache"`) {
		t.Errorf("status: %s", st)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
