package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

// clock is an injectable time source that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is a counting server: it records each request it gets and
// answers with what the test's function returns.
type origin struct {
	mu   sync.Mutex
	got  []*coap.Message // guarded by mu
	resp func(n int, req *coap.Message) *coap.Message
}

func newOrigin(resp func(n int, req *coap.Message) *coap.Message) *origin {
	return &origin{resp: resp}
}

func (o *origin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	o.got = append(o.got, r.Msg.Clone())
	n := len(o.got)
	o.mu.Unlock()
	return w.WriteResponse(o.resp(n, r.Msg))
}

func (o *origin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got)
}

func (o *origin) last(t *testing.T) *coap.Message {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.got) == 0 {
		t.Fatal("origin got nothing")
	}
	return o.got[len(o.got)-1]
}

// content answers 2.05 with a payload, Content-Format, ETag and Max-Age.
func content(payload string, cf uint32, etag string, maxAge int) *coap.Message {
	m := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
	m.Options = m.Options.SetUint(coap.ContentFormat, cf)
	if etag != "" {
		m.Options = m.Options.Insert(coap.ETag, []byte(etag))
	}
	if maxAge >= 0 {
		m.Options = m.Options.SetUint(coap.MaxAge, uint32(maxAge))
	}
	return m
}

func always(m *coap.Message) func(int, *coap.Message) *coap.Message {
	return func(int, *coap.Message) *coap.Message { return m }
}

// get builds a GET for a Proxy-Uri.
func get(uri string, extra ...coap.Option) *coap.Request {
	m := &coap.Message{Code: coap.GET, Token: []byte{1, 2}, MID: 7}
	m.Options = m.Options.Insert(coap.ProxyURI, []byte(uri))
	for _, o := range extra {
		m.Options = m.Options.Insert(o.ID, o.Value)
	}
	return &coap.Request{Msg: m}
}

func opt(id coap.OptionID, v string) coap.Option { return coap.Option{ID: id, Value: []byte(v)} }

func uintOpt(id coap.OptionID, v uint32) coap.Option {
	return coap.Option{ID: id, Value: coap.EncodeUint(v)}
}

type fixture struct {
	c     *Cache
	clk   *clock
	o     *origin
	stage coap.Handler
}

func newFixture(t *testing.T, cfg Config, resp func(int, *coap.Message) *coap.Message) *fixture {
	t.Helper()
	clk := newClock()
	c := New(cfg, WithClock(clk.Now))
	o := newOrigin(resp)
	return &fixture{c: c, clk: clk, o: o, stage: c.Stage(o)}
}

// do sends a request through the stage and returns the answer.
func (f *fixture) do(t *testing.T, r *coap.Request) *coap.Message {
	t.Helper()
	w := coaptest.NewRecorder(nil)
	if err := f.stage.ServeCoAP(context.Background(), w, r); err != nil {
		t.Fatalf("stage: %v", err)
	}
	resp := w.Msg()
	if resp == nil {
		t.Fatal("no response written")
	}
	return resp
}

func maxAgeOf(t *testing.T, m *coap.Message) uint32 {
	t.Helper()
	v, ok := m.Options.Uint(coap.MaxAge)
	if !ok {
		t.Fatalf("no Max-Age in %v", m)
	}
	return v
}

// sameExceptMaxAge asserts the protection rule: code, payload and every
// option except Max-Age byte-identical, order included.
func sameExceptMaxAge(t *testing.T, want, got *coap.Message) {
	t.Helper()
	if want.Code != got.Code || string(want.Payload) != string(got.Payload) {
		t.Fatalf("got %v %q, want %v %q", got.Code, got.Payload, want.Code, want.Payload)
	}
	a := append(coap.Options(nil), want.Options...).Remove(coap.MaxAge)
	b := append(coap.Options(nil), got.Options...).Remove(coap.MaxAge)
	if !a.Equal(b) {
		t.Fatalf("options %v, want %v", b, a)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
