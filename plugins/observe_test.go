package plugins

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/observetest"
)

// obsOrigin is a CoAP server with observable resources: every path
// answers 2.05 with the current payload and registers observers, except
// "missing", which answers 4.04.
type obsOrigin struct {
	addr netip.AddrPort

	mu      sync.Mutex
	payload string       // guarded by mu
	seq     uint32       // guarded by mu
	regs    []*originReg // guarded by mu: every registration
	cancels int          // guarded by mu: registrations cancelled by Observe=1 or RST
}

type originReg struct {
	w    coap.NotifyWriter
	gone bool
}

func newObsOrigin(t *testing.T) *obsOrigin {
	t.Helper()
	o := &obsOrigin{payload: "v0"}
	_, o.addr = coapEndpoint(t, coap.EndpointConfig{Handler: coap.HandlerFunc(o.serve)})
	return o
}

func coapEndpoint(t *testing.T, cfg coap.EndpointConfig) (*coap.Endpoint, netip.AddrPort) {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, cfg)
	t.Cleanup(func() { e.Close() })
	return e, u.LocalAddr()
}

func (o *obsOrigin) serve(_ context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, _ := r.Msg.Options.Get(coap.URIPath); string(p) == "missing" {
		return w.WriteResponse(&coap.Message{Code: coap.NotFound, Payload: []byte("no such thing")})
	}
	resp := &coap.Message{Code: coap.Content, Payload: []byte(o.payload)}
	v, ok := r.Msg.Options.Uint(coap.Observe)
	switch {
	case ok && v == 0:
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		o.regs = append(o.regs, &originReg{w: nw})
		resp.Options = resp.Options.SetUint(coap.Observe, o.seq)
	case ok && v == 1:
		for _, x := range o.regs {
			if !x.gone && bytes.Equal(x.w.Token(), r.Msg.Token) && x.w.Peer() == r.Peer {
				x.gone = true
				o.cancels++
			}
		}
	}
	return w.WriteResponse(resp)
}

// push changes the resource and notifies every live registration.
func (o *obsOrigin) push(t *testing.T, payload string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.payload = payload
	o.seq++
	n := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
	n.Options = n.Options.SetUint(coap.Observe, o.seq)
	for _, x := range o.regs {
		if x.gone {
			continue
		}
		err := x.w.Notify(n, false, func(err error) {
			if errors.Is(err, coap.ErrReset) {
				o.mu.Lock()
				defer o.mu.Unlock()
				if !x.gone {
					x.gone = true
					o.cancels++
				}
			}
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// counts returns the registrations made and cancelled so far.
func (o *obsOrigin) counts() (regs, cancels int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.regs), o.cancels
}

// hubChain is gatewayd's chain as far as Observe goes: the hub, then a
// route stage to the origin (observetest.Route).
func hubChain(t *testing.T, o *obsOrigin, cfg observe.Config) (*observe.Hub, coap.Handler) {
	t.Helper()
	up, _ := coapEndpoint(t, coap.EndpointConfig{})
	hub := observe.New(cfg)
	t.Cleanup(func() { hub.Close() })
	route := observetest.Route(up, o.addr)
	return hub, hub.Stage(route)
}

func observerConfig(path string) Config {
	c := echoConfig("fe", "fe")
	c.Config["front_end"] = true
	c.Config["observe"] = path
	return c
}

// observed is what the plugin's Host.Observe has passed to its callback,
// and how it ended ("" while it runs).
func observed(t *testing.T, tr *Translator) (payloads, end string) {
	t.Helper()
	resp, err := tr.RoundTrip(t.Context(), "fe://x/observed", &coap.Message{Code: coap.GET})
	if err != nil {
		return "", ""
	}
	payloads, end, _ = strings.Cut(string(resp.Payload), "|")
	return payloads, end
}

// until polls cond; the 20 s bound only fails a test that hangs.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.EventuallyWithin(t, 20*time.Second, what, cond)
}

func waitObserved(t *testing.T, tr *Translator, want string) {
	t.Helper()
	var got, end string
	until(t, "the plugin to observe "+want, func() bool {
		got, end = observed(t, tr)
		if end != "" {
			t.Fatalf("observation ended: %q after %q", end, got)
		}
		return got == want
	})
}

func TestFrontEndObserveSharesTheHubsObservationAndLeavesNothingBehind(t *testing.T) {
	for _, typ := range []string{observe.NotifyNON, observe.NotifyCON} {
		t.Run(typ, func(t *testing.T) {
			o := newObsOrigin(t)
			cfg := observe.Defaults()
			cfg.NotifyType = typ
			hub, chain := hubChain(t, o, cfg)
			_, proxy := coapEndpoint(t, coap.EndpointConfig{Handler: chain})
			h := newHost(t, chain, observerConfig("temp"))
			tr := translator(t, h, "fe")

			// The plugin's registration is the hub's first observer.
			waitObserved(t, tr, "v0")
			if s := hub.Stats(); s.Observers != 1 || s.Upstreams != 1 {
				t.Fatalf("hub after the plugin registered: %+v", s)
			}

			// A plain CoAP client joins the same upstream observation.
			client, _ := coapEndpoint(t, coap.EndpointConfig{})
			var got atomic.Value
			get := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.URIPath, []byte("temp"))}
			first, obs, err := client.Observe(t.Context(), proxy, get, func(m *coap.Message) { got.Store(string(m.Payload)) })
			if err != nil || obs == nil || string(first.Payload) != "v0" {
				t.Fatalf("client observe: %v %v %v", first, obs, err)
			}
			if s := hub.Stats(); s.Observers != 2 || s.Upstreams != 1 {
				t.Fatalf("hub with two observers: %+v", s)
			}
			if regs, _ := o.counts(); regs != 1 {
				t.Fatalf("origin saw %d registrations, want the one shared", regs)
			}

			// Notifications reach both, the plugin's in order.
			o.push(t, "v1")
			waitObserved(t, tr, "v0,v1")
			until(t, "the client to get v1", func() bool { return got.Load() == "v1" })
			o.push(t, "v2")
			waitObserved(t, tr, "v0,v1,v2")
			until(t, "the client to get v2", func() bool { return got.Load() == "v2" })

			// The client leaves; the plugin's observation carries on.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := obs.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			until(t, "the client's deregistration", func() bool { return hub.Stats().Observers == 1 })
			if _, cancels := o.counts(); cancels != 0 {
				t.Fatalf("upstream cancelled while the plugin still observes")
			}

			// The plugin's stream ends: its observer goes, and with the
			// last observer the upstream registration.
			if _, err := tr.RoundTrip(t.Context(), "fe://x/unobserve", &coap.Message{Code: coap.POST}); err != nil {
				t.Fatal(err)
			}
			until(t, "the plugin's deregistration", func() bool {
				s := hub.Stats()
				return s.Observers == 0 && s.Upstreams == 0
			})
			until(t, "the origin to see the cancellation", func() bool {
				_, cancels := o.counts()
				return cancels == 1
			})
			// The plugin notes the end once its Observe call has returned,
			// which may be after the hub let the observer go.
			var p, end string
			until(t, "the plugin to note its observation's end", func() bool {
				p, end = observed(t, tr)
				return end != ""
			})
			if p != "v0,v1,v2" || end != context.Canceled.Error() {
				t.Errorf("plugin observed %q, ended %q", p, end)
			}
			if s := h.Stats()[0]; s.Observes != 1 || s.Callbacks != 0 {
				t.Errorf("stats %+v, want one Observe callback", s)
			}
		})
	}
}

func TestKilledPluginsObserverIsDeregistered(t *testing.T) {
	o := newObsOrigin(t)
	hub, chain := hubChain(t, o, observe.Defaults())
	h := newHost(t, chain, observerConfig("temp"))
	tr := translator(t, h, "fe")
	waitObserved(t, tr, "v0")
	pid := h.Stats()[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	until(t, "the plugin's restart", func() bool {
		s := h.Stats()[0]
		return s.Up && s.PID != pid
	})
	waitObserved(t, tr, "v0")
	// The dead plugin's observer is gone, the restarted plugin's is the
	// only one, on one live upstream registration (the first one was
	// cancelled with the dead plugin's observer, or kept if the new one
	// joined it first). A leftover observer would keep the count at 2.
	until(t, "the dead plugin's observer to go", func() bool {
		regs, cancels := o.counts()
		s := hub.Stats()
		return s.Observers == 1 && s.Upstreams == 1 && regs-cancels == 1
	})
}

func TestFrontEndObserveOfAnErrorEndsWithIt(t *testing.T) {
	o := newObsOrigin(t)
	hub, chain := hubChain(t, o, observe.Defaults())
	h := newHost(t, chain, observerConfig("missing"))
	tr := translator(t, h, "fe")
	var got, end string
	until(t, "the observation to end", func() bool {
		got, end = observed(t, tr)
		return end != ""
	})
	if got != "no such thing" || end != "sdk: observation ended" {
		t.Errorf("plugin observed %q, ended %q", got, end)
	}
	if s := hub.Stats(); s.Observers != 0 || s.Upstreams != 0 {
		t.Errorf("hub kept %+v", s)
	}
}

func TestSlowObserverGetsTheLatestNotificationAndSkipsCount(t *testing.T) {
	var skipped atomic.Uint64
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: 5, Token: []byte("plug")}
	reg := &coap.Request{Msg: &coap.Message{Code: coap.GET, Token: []byte("8bytes!!")}, Peer: peerAddr(0)}
	w := newObserveWriter(req, reg, &skipped)
	if w.Peer() != peerAddr(0) || string(w.Token()) != "8bytes!!" {
		t.Fatalf("writer is %v %q", w.Peer(), w.Token())
	}
	if m, _ := w.take(); m != nil {
		t.Fatalf("took %v before the response", m)
	}
	notif := func(p string, seq uint32) *coap.Message {
		return &coap.Message{Code: coap.Content, Payload: []byte(p), Options: coap.Options(nil).SetUint(coap.Observe, seq)}
	}
	if err := w.WriteResponse(notif("first", 1)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteResponse(notif("again", 1)); !errors.Is(err, coap.ErrAnswered) {
		t.Fatalf("second response: %v", err)
	}
	// Three notifications arrive before the stream takes any: the hub is
	// never blocked, and the plugin gets the newest.
	for i, p := range []string{"n1", "n2", "n3"} {
		n := notif(p, uint32(i+2))
		if err := w.Notify(n, false, nil); err != nil {
			t.Fatal(err)
		}
		n.Payload[0] = 'X' // the hub reuses its memory
	}
	m, _ := w.take()
	if string(m.Payload) != "first" || m.Type != coap.Acknowledgement || m.MID != 5 || string(m.Token) != "plug" {
		t.Fatalf("first taken: %v %q", m, m.Payload)
	}
	m, done := w.take()
	if string(m.Payload) != "n3" || string(m.Token) != "plug" || done != nil {
		t.Fatalf("notification taken: %q", m.Payload)
	}
	if v, _ := m.Options.Uint(coap.Observe); v != 4 {
		t.Fatalf("Observe %d, want the newest's", v)
	}
	if m, _ := w.take(); m != nil {
		t.Fatalf("taken twice: %q", m.Payload)
	}
	if skipped.Load() != 2 {
		t.Fatalf("skipped %d, want 2", skipped.Load())
	}

	// A CON is settled when taken, or rejected when the stream ends first.
	var outcome []error
	record := func(err error) { outcome = append(outcome, err) }
	_ = w.Notify(notif("c1", 5), true, record)
	_, done = w.take()
	done(nil)
	_ = w.Notify(notif("c2", 6), true, record)
	w.close()
	if len(outcome) != 2 || outcome[0] != nil || !errors.Is(outcome[1], coap.ErrReset) {
		t.Fatalf("CON outcomes %v", outcome)
	}
	if err := w.Notify(notif("late", 7), false, nil); !errors.Is(err, errObserverGone) {
		t.Fatalf("Notify after the stream ended: %v, want an error so the hub drops the observer", err)
	}
}
