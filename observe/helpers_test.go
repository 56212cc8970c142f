package observe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
)

// fakeClock is a manual clock; Advance runs the timers that come due.
type fakeClock = clocktest.Fake

func newFakeClock() *fakeClock { return clocktest.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) }

func listenUDP(t testing.TB, addr string) *coap.UDP {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func endpoint(t testing.TB, addr string, cfg coap.EndpointConfig) (*coap.Endpoint, netip.AddrPort) {
	t.Helper()
	u := listenUDP(t, addr)
	e := coap.NewEndpoint(u, cfg)
	t.Cleanup(func() { e.Close() })
	return e, u.LocalAddr()
}

// origin is an observable server: it keeps the NotifyWriter of every
// registration and lets the test push notifications.
type origin struct {
	mu      sync.Mutex
	regs    []*originObs // every registration, in order
	deregs  int          // GETs with Observe=1
	resets  int          // notifications rejected with RST
	gets    int          // plain GETs
	first   string       // payload of first responses
	seq     uint32       // Observe of first responses
	maxAge  int          // Max-Age of first responses, -1 for none
	code    coap.Code    // code of first responses; 0 for 2.05
	noObs   bool         // answer without Observe: not observable
	gate    chan struct{}
	entered chan struct{}
}

type originObs struct {
	w    coap.NotifyWriter
	req  *coap.Message
	gone bool
}

func newOrigin() *origin { return &origin{first: "v0", seq: 1, maxAge: -1} }

func (o *origin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	gate, entered := o.gate, o.entered
	o.mu.Unlock()
	if entered != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	code := o.code
	if code == 0 {
		code = coap.Content
	}
	resp := &coap.Message{Code: code, Payload: []byte(o.first)}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
	if o.maxAge >= 0 {
		resp.Options = resp.Options.SetUint(coap.MaxAge, uint32(o.maxAge))
	}
	v, ok := r.Msg.Options.Uint(coap.Observe)
	switch {
	case ok && v == 0:
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		o.regs = append(o.regs, &originObs{w: nw, req: r.Msg.Clone()})
		if !o.noObs && code.Class() == 2 {
			resp.Options = resp.Options.SetUint(coap.Observe, o.seq)
		}
	case ok && v == 1:
		// Only a cancellation with the token of a registration counts
		// (RFC 7641 §3.6); a forwarded client deregistration comes with
		// a token of its own.
		for _, x := range o.regs {
			if string(x.w.Token()) == string(r.Msg.Token) && r.Peer == x.w.Peer() && !x.gone {
				x.gone = true
				o.deregs++
			}
		}
	default:
		o.gets++
	}
	return w.WriteResponse(resp)
}

func (o *origin) registrations() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.regs)
}

// cancelled counts registrations the proxy cancelled, by Observe=1 or by
// rejecting a notification with RST.
func (o *origin) cancelled() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.deregs + o.resets
}

// push sends a notification to every live registration (or only the
// ones pick selects).
func (o *origin) push(t testing.TB, n *coap.Message, con bool) {
	t.Helper()
	o.mu.Lock()
	regs := append([]*originObs(nil), o.regs...)
	o.mu.Unlock()
	for _, x := range regs {
		o.pushTo(t, x, n, con)
	}
}

func (o *origin) pushTo(t testing.TB, x *originObs, n *coap.Message, con bool) {
	t.Helper()
	o.mu.Lock()
	gone := x.gone
	o.mu.Unlock()
	if gone {
		return
	}
	err := x.w.Notify(n, con, func(err error) {
		if err == coap.ErrReset {
			o.mu.Lock()
			o.resets++
			x.gone = true
			o.mu.Unlock()
		}
	})
	if err != nil {
		t.Error(err)
	}
}

func content(payload string, seq uint32) *coap.Message {
	n := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
	n.Options = n.Options.SetUint(coap.Observe, seq)
	n.Options = n.Options.SetUint(coap.ContentFormat, 0)
	return n
}

// route is the test's route stage: what bridge's does for the hub, with
// one origin.
func route(up *coap.Endpoint, to netip.AddrPort) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		out := *r.Msg
		out.Options = append(coap.Options(nil), r.Msg.Options...)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var resp *coap.Message
		var err error
		if u := r.Observer; u != nil {
			var obs *coap.Observation
			resp, obs, err = up.Observe(ctx, to, &out, u.Notify)
			if obs != nil {
				u.Started(obs.Cancel)
			}
		} else {
			resp, err = up.Do(ctx, to, &out)
		}
		if err != nil {
			return &coap.Error{Code: coap.BadGateway, MaxAge: -1, Err: err}
		}
		return w.WriteResponse(resp)
	})
}

// rig is an origin, a proxy endpoint serving hub.Stage(route) and the
// hub.
type rig struct {
	origin *origin
	hub    *Hub
	proxy  netip.AddrPort
	pe     *coap.Endpoint
}

func newRig(t testing.TB, cfg Config, params coap.Params, opts ...Option) *rig {
	t.Helper()
	o := newOrigin()
	_, oaddr := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{Handler: o})
	up, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	h := New(cfg, opts...)
	pe, paddr := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{Handler: h.Stage(route(up, oaddr)), Params: params})
	// Endpoints close (cleanups run last-first) before the hub.
	t.Cleanup(func() { h.Close() })
	t.Cleanup(func() { pe.Close() })
	return &rig{origin: o, hub: h, proxy: paddr, pe: pe}
}

func get(path string) *coap.Message {
	m := &coap.Message{Code: coap.GET}
	m.Options = m.Options.Insert(coap.URIPath, []byte(path))
	return m
}

// watcher is a Go observer that records what it receives.
type watcher struct {
	mu     sync.Mutex
	first  *coap.Message
	got    []*coap.Message
	obs    *coap.Observation
	e      *coap.Endpoint
	failed string
}

func observeAt(t testing.TB, c *coap.Endpoint, to netip.AddrPort, req *coap.Message) *watcher {
	t.Helper()
	w := &watcher{e: c}
	first, obs, err := c.Observe(context.Background(), to, req, func(m *coap.Message) {
		w.mu.Lock()
		w.got = append(w.got, m)
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	w.first, w.obs = first, obs
	return w
}

func (w *watcher) payloads() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var p []string
	for _, m := range w.got {
		p = append(p, string(m.Payload))
	}
	return p
}

func (w *watcher) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.got) == 0 {
		return string(w.first.Payload)
	}
	return string(w.got[len(w.got)-1].Payload)
}

// checkIncreasing fails unless the first response and every notification
// carry strictly increasing Observe numbers in 24-bit serial arithmetic.
func (w *watcher) checkIncreasing(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, ok := w.first.Options.Uint(coap.Observe)
	if !ok {
		t.Fatal("first response without Observe")
	}
	for i, m := range w.got {
		v, ok := m.Options.Uint(coap.Observe)
		if !ok {
			continue
		}
		if d := (v - prev) & seqMask; d == 0 || d >= 1<<23 {
			t.Fatalf("notification %d: Observe %d after %d", i, v, prev)
		}
		prev = v
	}
}

// rawClient drives the proxy by hand: it never acknowledges unless told.
type rawClient struct {
	t   testing.TB
	c   *net.UDPConn
	to  netip.AddrPort
	mid uint16
}

func newRawClient(t testing.TB, to netip.AddrPort) *rawClient {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, to: to, mid: 100}
}

func (r *rawClient) send(m *coap.Message) {
	r.t.Helper()
	b, err := m.Marshal()
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.WriteToUDPAddrPort(b, r.to); err != nil {
		r.t.Fatal(err)
	}
}

// register sends a CON GET with Observe=0 and returns the response.
func (r *rawClient) register(path string, token string) *coap.Message {
	r.t.Helper()
	m := get(path)
	m.Type, m.MID, m.Token = coap.Confirmable, r.mid, []byte(token)
	r.mid++
	m.Options = m.Options.SetUint(coap.Observe, 0)
	r.send(m)
	return r.read(5 * time.Second)
}

func (r *rawClient) read(d time.Duration) *coap.Message {
	r.t.Helper()
	m, err := r.tryRead(d)
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *rawClient) tryRead(d time.Duration) (*coap.Message, error) {
	buf := make([]byte, 2048)
	r.c.SetReadDeadline(time.Now().Add(d))
	n, _, err := r.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, err
	}
	var m coap.Message
	if err := m.Decode(buf[:n]); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return m.Clone(), nil
}

func (r *rawClient) empty(typ coap.Type, mid uint16) {
	r.send(&coap.Message{Type: typ, MID: mid})
}
