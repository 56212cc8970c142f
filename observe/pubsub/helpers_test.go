package pubsub

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
)

const testCF = 65001

// fakeClock is a manual clock; Advance runs the timers that come due.
type fakeClock = clocktest.Fake

func newFakeClock() *fakeClock { return clocktest.New(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)) }

type rig struct {
	t     testing.TB
	b     *Broker
	clock *fakeClock
	cfg   Config
	stage coap.Handler
	next  int // requests passed to next
	// peer and identity are the client of the requests do sends:
	// [2001:db8::1]:5683 and none unless a test sets them.
	peer     netip.AddrPort
	identity string
}

func testConfig(t testing.TB) Config {
	cfg := Defaults()
	cfg.Enabled = true
	cfg.StateDir = t.TempDir()
	cfg.MinPublishInterval = Duration{} // the rate limit has its own test
	// The rig's requests come from 2001:db8::1; the access lists and the
	// per-client quota have tests of their own.
	cfg.Admins = append(cfg.Admins, "2001:db8::/32")
	cfg.MaxTopicsPerClient = cfg.MaxTopics
	return cfg
}

func newRig(t testing.TB, mod func(*Config), opts ...Option) *rig {
	t.Helper()
	cfg := testConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	return openRig(t, cfg, opts...)
}

func openRig(t testing.TB, cfg Config, opts ...Option) *rig {
	t.Helper()
	r := &rig{t: t, clock: newFakeClock(), cfg: cfg, peer: netip.MustParseAddrPort("[2001:db8::1]:5683")}
	b, err := New(cfg, append([]Option{WithClock(r.clock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.b = b
	r.stage = b.Stage(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		r.next++
		return w.WriteResponse(&coap.Message{Code: coap.NotImplemented})
	}))
	return r
}

// msg builds a request for path ("/ps/x?rt=y"), with options as pairs.
func msg(code coap.Code, path string, payload []byte, opts ...any) *coap.Message {
	m := &coap.Message{Type: coap.Confirmable, Code: code, MID: 1, Token: []byte{1, 2}, Payload: payload}
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
		id, ok := opts[i].(coap.OptionID)
		if !ok {
			panic("msg: options come in (coap.OptionID, value) pairs")
		}
		switch v := opts[i+1].(type) {
		case int:
			m.Options = m.Options.Insert(id, coap.EncodeUint(uint32(v)))
		case []byte:
			m.Options = m.Options.Insert(id, v)
		}
	}
	return m
}

// do runs one request through the stage, with u for the hub that asks
// for an upstream observation, if not nil.
func (r *rig) do(u coap.Observer, m *coap.Message) *coap.Message {
	r.t.Helper()
	req := &coap.Request{Msg: m, Peer: r.peer, Identity: r.identity, Observer: u}
	rec := coaptest.Serve(r.t, r.stage, req)
	if err := rec.Err(); err != nil {
		r.t.Fatalf("%v %v: %v", m.Code, m, err)
	}
	if rec.Msg() == nil {
		r.t.Fatalf("%v: no response", m)
	}
	return rec.Msg()
}

func (r *rig) req(code coap.Code, path string, payload []byte, opts ...any) *coap.Message {
	r.t.Helper()
	return r.do(nil, msg(code, path, payload, opts...))
}

// subscribe registers u as the hub would.
func (r *rig) subscribe(path string, u coap.Observer) *coap.Message {
	r.t.Helper()
	return r.do(u, msg(coap.GET, path, nil, coap.Observe, 0))
}

func enc(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dec(t testing.TB, b []byte) map[int]any {
	t.Helper()
	var m map[int]any
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return m
}

// create makes a topic and returns its topic path and topic-data path.
func (r *rig) create(props map[int]any) (topicPath, dataPath string) {
	r.t.Helper()
	resp := r.req(coap.POST, "/"+r.cfg.Path, enc(r.t, props), coap.ContentFormat, testCF)
	if resp.Code != coap.Created {
		r.t.Fatalf("create: %v %s", resp.Code, resp.Payload)
	}
	var segs []string
	for v := range resp.Options.All(coap.LocationPath) {
		segs = append(segs, string(v))
	}
	m := dec(r.t, resp.Payload)
	return "/" + strings.Join(segs, "/"), m[KeyTopicData].(string)
}

func (r *rig) publish(path string, cf int, payload []byte) *coap.Message {
	r.t.Helper()
	return r.req(coap.PUT, path, payload, coap.ContentFormat, cf)
}

func uintOpt(t testing.TB, m *coap.Message, id coap.OptionID) (uint32, bool) {
	t.Helper()
	return m.Options.Uint(id)
}

func wantCode(t testing.TB, what string, got *coap.Message, want coap.Code) {
	t.Helper()
	if got.Code != want {
		t.Fatalf("%s: got %v (%s), want %v", what, got.Code, got.Payload, want)
	}
}
