package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

// The stage contract (coap/handler.go) held by every stage of the chain:
// whatever the stage after it does with a request it passes on (answer at
// once, answer later from another goroutine, answer a registration and
// notify afterwards, either way, or fail), the client gets that answer,
// written once, the request ends once, and notifications reach it. Each
// stage is run alone in front of a scripted origin, outside an endpoint
// (coaptest) and behind a real endpoint that serves what it can on its
// reader (coap.Inline) as the proxy's listeners do.

// contractCase is what the scripted origin does with the request.
type contractCase string

const (
	answerNow    contractCase = "now"
	answerLater  contractCase = "later"
	notifyNow    contractCase = "notify"
	notifyLater  contractCase = "notify-later"
	answerFailed contractCase = "error"
)

var contractCases = []contractCase{answerNow, answerLater, notifyNow, notifyLater, answerFailed}

// registers reports the cases whose request is an Observe registration.
func (c contractCase) registers() bool { return c == notifyNow || c == notifyLater }

// scriptedOrigin is the stage after the one under test: it answers by its
// case, and keeps the way to notify the client of a registration.
type scriptedOrigin struct {
	c contractCase

	mu     sync.Mutex
	notify func(*coap.Message) error // guarded by mu: set once registered
	ready  chan struct{}             // closed when notify is set
}

func newOrigin(c contractCase) *scriptedOrigin {
	return &scriptedOrigin{c: c, ready: make(chan struct{})}
}

func contractResponse(payload string, obs uint32) *coap.Message {
	m := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
	if obs > 0 {
		m.Options = m.Options.SetUint(coap.Observe, obs)
	}
	m.Options = m.Options.SetUint(coap.MaxAge, 60)
	return m
}

func (o *scriptedOrigin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	switch o.c {
	case answerNow:
		return w.WriteResponse(contractResponse("now", 0))
	case answerLater:
		return coap.Later(ctx, func() {
			go func() {
				coap.Finish(w, w.WriteResponse(contractResponse("later", 0)))
			}()
		})
	case notifyNow:
		return o.register(w, r)
	case notifyLater:
		return coap.Later(ctx, func() {
			go func() { coap.Finish(w, o.register(w, r)) }()
		})
	}
	return coap.Errorf(coap.NotFound, "gone")
}

// register answers a registration and keeps how to notify: through the
// request's Observer when a hub asked for one, else through the writer.
func (o *scriptedOrigin) register(w coap.ResponseWriter, r *coap.Request) error {
	if u := r.Observer; u != nil {
		u.Started(func(context.Context) error { return nil })
		o.registered(func(n *coap.Message) error { u.Notify(n); return nil })
		return w.WriteResponse(contractResponse("first", 2))
	}
	nw, ok := w.(coap.NotifyWriter)
	if !ok {
		return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
	}
	o.registered(func(n *coap.Message) error { return nw.Notify(n, false, nil) })
	return nw.WriteResponse(contractResponse("first", 2))
}

func (o *scriptedOrigin) registered(notify func(*coap.Message) error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notify = notify
	close(o.ready)
}

// fire sends the notification, once the first response is out.
func (o *scriptedOrigin) fire(t *testing.T) {
	t.Helper()
	select {
	case <-o.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the origin never got the registration")
	}
	o.mu.Lock()
	notify := o.notify
	o.mu.Unlock()
	if err := notify(contractResponse("next", 3)); err != nil {
		t.Fatalf("notify: %v", err)
	}
}

// scriptedUpstream is the origin behind the route stage: the upstream it
// sends forwarded requests to, by the same script.
type scriptedUpstream struct{ o *scriptedOrigin }

var (
	_ Upstream      = scriptedUpstream{}
	_ asyncUpstream = scriptedUpstream{}
)

func (u scriptedUpstream) RoundTrip(ctx context.Context, _ netip.AddrPort, _ *coap.Message) (*coap.Message, error) {
	switch u.o.c {
	case answerNow:
		return contractResponse("now", 0), nil
	case answerLater:
		ch := make(chan *coap.Message, 1)
		go func() { ch <- contractResponse("later", 0) }()
		return <-ch, nil
	}
	return nil, coap.Errorf(coap.NotFound, "gone")
}

func (u scriptedUpstream) Go(_ netip.AddrPort, req *coap.Message, _ time.Duration, done func(*coap.Message, error)) {
	go func() { done(u.RoundTrip(context.Background(), netip.AddrPort{}, req)) }()
}

func (u scriptedUpstream) Observe(_ context.Context, _ netip.AddrPort, _ *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	u.o.registered(func(n *coap.Message) error { notify(n); return nil })
	return contractResponse("first", 2), func(context.Context) error { return nil }, nil
}

// contractStage is one stage of the chain, built over next.
type contractStage struct {
	name string
	// build returns the stage in front of o: next for most, the upstream
	// for the route stage.
	build func(o *scriptedOrigin) coap.Handler
	// unverified runs the requests from an address no one has verified
	// (outside an endpoint; on one, the stage leaves loopback unverified
	// too).
	unverified bool
	// skip names the cases the stage never passes on, and why.
	skip map[contractCase]string
}

func contractStages(t *testing.T) []contractStage {
	p := startProxy(t, func(c *Config) {
		c.PubSub.Enabled = true
		c.PubSub.StateDir = t.TempDir()
		c.Proxy.Rate, c.Proxy.Burst = 1000, 1000
	})
	c := p.chain.Load()
	cfg, forwards := c.cfg, c.router.forwards
	owned := func(m *coap.Message) bool { return p.broker.Owns(m) }
	verified, err := parsePrefixes(cfg.Proxy.Verified)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	over := func(st stage) func(*scriptedOrigin) coap.Handler {
		return func(o *scriptedOrigin) coap.Handler { return st(o) }
	}
	return []contractStage{
		{name: "metrics", build: over(p.metrics.stage)},
		{name: "amp, verified client", build: over(newAmp(p.amp, verified, p.isPlugin, forwards))},
		{name: "amp, unverified client", build: over(newAmp(newVerifier(cfg.Proxy), nil, p.isPlugin, forwards)), unverified: true,
			skip: map[contractCase]string{
				notifyNow:   "a registration from an address no one verified is challenged (RFC 9175 §2.4)",
				notifyLater: "a registration from an address no one verified is challenged (RFC 9175 §2.4)",
			}},
		{name: "access", build: over(newAccess(cfg.Proxy))},
		{name: "hop-limit", build: over(newHopLimit(cfg.Proxy, log, forwards))},
		{name: "guard", build: over(guard)},
		{name: "local", build: over(newLocal(cfg, forwards, owned, p.localLinks))},
		{name: "pubsub gate", build: over(p.broker.Gate)},
		{name: "observe hub", build: over(p.hub.Stage)},
		{name: "pubsub", build: over(p.broker.Stage)},
		{name: "cache", build: over(p.cache.Stage)},
		// The route stage answers from its upstream, and observes the
		// origin only for a hub (Request.Observer): it is run behind
		// one.
		{name: "route, behind the hub", build: func(o *scriptedOrigin) coap.Handler {
			r, err := newRouter(cfg, scriptedUpstream{o}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return p.hub.Stage(r.stage(notFound))
		}},
	}
}

var notFound = coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
	return coap.Errorf(coap.NotFound, "")
})

// contractRequest is the request of a case: a forwarded GET, with
// Observe=0 for a registration, for a URI of its own.
func contractRequest(name string, c contractCase, n int) *coap.Message {
	m := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: []byte{byte(n), 0xc0}}
	m.Options = proxyURI(fmt.Sprintf("coap://127.0.0.1:9/%d/%s", n, c))
	if c.registers() {
		m.Options = m.Options.SetUint(coap.Observe, 0)
	}
	return m
}

// wantAnswer checks the first response a client got for case c.
func wantAnswer(t *testing.T, c contractCase, resp *coap.Message) {
	t.Helper()
	want := map[contractCase]string{answerNow: "now", answerLater: "later", notifyNow: "first", notifyLater: "first", answerFailed: "gone"}[c]
	code := coap.Content
	if c == answerFailed {
		code = coap.NotFound
	}
	if resp == nil || resp.Code != code || string(resp.Payload) != want {
		t.Fatalf("the client got %v, want %v %q", resp, code, want)
	}
	if c.registers() && !resp.Options.Has(coap.Observe) {
		t.Fatalf("the first response %v has no Observe: the client is not observing", resp)
	}
}

func TestEveryStageKeepsTheContractOutsideAnEndpoint(t *testing.T) {
	for i, st := range contractStages(t) {
		for j, c := range contractCases {
			if _, never := st.skip[c]; never {
				continue
			}
			t.Run(st.name+"/"+string(c), func(t *testing.T) {
				o := newOrigin(c)
				peer := netip.MustParseAddrPort("127.0.0.1:40001")
				if st.unverified {
					peer = netip.MustParseAddrPort("192.0.2.7:40001")
				}
				req := &coap.Request{Msg: contractRequest(st.name, c, i*len(contractCases)+j), Peer: peer}
				rec := coaptest.Serve(t, st.build(o), req)
				wantAnswer(t, c, rec.Msg())
				if rec.Writes() != 1 || rec.Finishes() > 1 {
					t.Fatalf("%d writes and %d Finish calls reached the client, want 1 and at most 1", rec.Writes(), rec.Finishes())
				}
				if c.registers() {
					o.fire(t)
					rec.WaitFor(t, "the notification", func(r *coaptest.Recorder) bool { return len(r.Notifications()) > 0 })
					if n := rec.Notifications()[0]; string(n.Payload) != "next" || !n.Options.Has(coap.Observe) {
						t.Fatalf("notification %v %q", n, n.Payload)
					}
				}
			})
		}
	}
}

func TestEveryStageKeepsTheContractOnAnEndpoint(t *testing.T) {
	client := client(t)
	for i, st := range contractStages(t) {
		for j, c := range contractCases {
			if _, never := st.skip[c]; never {
				continue
			}
			t.Run(st.name+"/"+string(c), func(t *testing.T) {
				o := newOrigin(c)
				u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				// As the proxy's listeners: what is not a registration
				// runs on the reader (coap.Inline), registrations on a
				// worker.
				e := coap.NewEndpoint(u, coap.EndpointConfig{
					Handler: st.build(o),
					Inline:  func(r *coap.Request) bool { return !r.Msg.Options.Has(coap.Observe) },
				})
				defer e.Close()
				req := contractRequest(st.name, c, 1000+i*len(contractCases)+j)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if !c.registers() {
					resp, err := client.Do(ctx, u.LocalAddr(), req)
					if err != nil {
						t.Fatal(err)
					}
					wantAnswer(t, c, resp)
					return
				}
				notes := make(chan *coap.Message, 4)
				resp, obs, err := client.Observe(ctx, u.LocalAddr(), req, func(n *coap.Message) { notes <- n })
				if err != nil {
					t.Fatal(err)
				}
				defer obs.Forget(ctx)
				wantAnswer(t, c, resp)
				o.fire(t)
				select {
				case n := <-notes:
					if string(n.Payload) != "next" {
						t.Fatalf("notification %q", n.Payload)
					}
				case <-ctx.Done():
					t.Fatal("no notification reached the client")
				}
			})
		}
	}
}
