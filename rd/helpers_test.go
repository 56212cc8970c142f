package rd

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
)

// recorder is an in-memory ResponseWriter.
type recorder struct {
	mu   sync.Mutex
	resp *coap.Message
}

func (r *recorder) WriteResponse(m *coap.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resp != nil {
		return coap.ErrAnswered
	}
	r.resp = m.Clone()
	return nil
}

// The addresses requests come from: a node in the radio network, another
// node, and loopback.
var (
	radioNet = netip.MustParsePrefix("fd00:db8:1::/64")
	node1    = netip.MustParseAddrPort("[fd00:db8:1::1]:5683")
	node2    = netip.MustParseAddrPort("[fd00:db8:1::2]:5683")
	node3    = netip.MustParseAddrPort("[fd00:db8:1::3]:5683")
	stranger = netip.MustParseAddrPort("[2001:db8::9]:5683")
)

var epoch = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

type rig struct {
	t     testing.TB
	d     *Directory
	clock *clocktest.Fake
	cfg   Config
	stage coap.Handler
	next  int // requests passed to next
}

func testConfig(t testing.TB) Config {
	cfg := Defaults()
	cfg.Enabled = true
	cfg.StateDir = t.TempDir()
	return cfg
}

func newRig(t testing.TB, mod func(*Config), opts ...Option) *rig {
	t.Helper()
	cfg := testConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	return openRig(t, cfg, clocktest.New(epoch), opts...)
}

// openRig opens a directory on cfg (its state directory as it is) with
// clock c.
func openRig(t testing.TB, cfg Config, c *clocktest.Fake, opts ...Option) *rig {
	t.Helper()
	r := &rig{t: t, clock: c, cfg: cfg}
	d, err := New(cfg, append([]Option{WithClock(c), WithRadioPrefixes([]netip.Prefix{radioNet})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	r.d = d
	r.stage = d.Gate(d.Stage(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		r.next++
		return w.WriteResponse(&coap.Message{Code: coap.NotImplemented})
	})))
	return r
}

// msg builds a request for path ("/rd?ep=x&lt=60"), with options as
// pairs of coap.OptionID and int or []byte.
func msg(code coap.Code, path string, payload string, opts ...any) *coap.Message {
	m := &coap.Message{Type: coap.Confirmable, Code: code, MID: 1, Token: []byte{1, 2}}
	if payload != "" {
		m.Payload = []byte(payload)
	}
	p, q, _ := strings.Cut(path, "?")
	for _, s := range strings.Split(strings.Trim(p, "/"), "/") {
		if s != "" {
			m.Options = m.Options.Insert(coap.URIPath, []byte(s))
		}
	}
	if q != "" {
		for _, s := range strings.Split(q, "&") {
			m.Options = m.Options.Insert(coap.URIQuery, []byte(s))
		}
	}
	for i := 0; i+1 < len(opts); i += 2 {
		id := opts[i].(coap.OptionID)
		switch v := opts[i+1].(type) {
		case int:
			m.Options = m.Options.Insert(id, coap.EncodeUint(uint32(v)))
		case []byte:
			m.Options = m.Options.Insert(id, v)
		}
	}
	return m
}

// from sends m from peer through the stage; ctx may carry an Upstream.
func (r *rig) from(ctx context.Context, peer netip.AddrPort, m *coap.Message) *coap.Message {
	r.t.Helper()
	return r.as(ctx, &coap.Request{Msg: m, Peer: peer})
}

func (r *rig) as(ctx context.Context, req *coap.Request) *coap.Message {
	r.t.Helper()
	w := &recorder{}
	if err := r.stage.ServeCoAP(ctx, w, req); err != nil {
		r.t.Fatalf("%v %v: %v", req.Msg.Code, req.Msg.Options, err)
	}
	if w.resp == nil {
		r.t.Fatalf("%v: no response", req.Msg.Code)
	}
	return w.resp
}

// register POSTs doc to /rd?query from peer and wants 2.01; it returns
// the location.
func (r *rig) register(peer netip.AddrPort, query, doc string) string {
	r.t.Helper()
	resp := r.from(context.Background(), peer, msg(coap.POST, "/rd?"+query, doc))
	if resp.Code != coap.Created {
		r.t.Fatalf("register %s from %v: %v %s", query, peer, resp.Code, resp.Payload)
	}
	return location(resp)
}

func location(m *coap.Message) string {
	var b strings.Builder
	for v := range m.Options.All(coap.LocationPath) {
		b.WriteString("/" + string(v))
	}
	return b.String()
}

// get GETs path from loopback and wants 2.05 with link format.
func (r *rig) get(path string) string {
	r.t.Helper()
	resp := r.from(context.Background(), netip.MustParseAddrPort("[::1]:40000"), msg(coap.GET, path, ""))
	if resp.Code != coap.Content {
		r.t.Fatalf("GET %s: %v %s", path, resp.Code, resp.Payload)
	}
	if cf, _ := resp.Options.Uint(coap.ContentFormat); cf != cfLinkFormat {
		r.t.Fatalf("GET %s: Content-Format %d", path, cf)
	}
	return string(resp.Payload)
}

func wantCode(t testing.TB, what string, resp *coap.Message, code coap.Code) {
	t.Helper()
	if resp.Code != code {
		t.Fatalf("%s: %v %q, want %v", what, resp.Code, resp.Payload, code)
	}
}
