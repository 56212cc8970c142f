package observe

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestFresherFollowsSerialArithmeticAnd128SecondRule(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		v1, v2 uint32
		after  time.Duration
		fresh  bool
	}{
		{"next", 5, 6, 0, true},
		{"same is not newer", 5, 5, 0, false},
		{"older", 6, 5, time.Second, false},
		{"just under half the space ahead", 0, 1<<23 - 1, 0, true},
		{"half the space ahead is behind", 0, 1 << 23, 0, false},
		{"wrap forward", 1<<24 - 2, 3, 0, true},
		{"wrap backward", 3, 1<<24 - 2, 0, false},
		{"older but 128 s later is still older", 6, 5, 128 * time.Second, false},
		{"older but more than 128 s later counts", 6, 5, 128*time.Second + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fresher(tc.v1, t0, tc.v2, t0.Add(tc.after)); got != tc.fresh {
				t.Fatalf("fresher(%d, %d, +%v) = %v", tc.v1, tc.v2, tc.after, got)
			}
		})
	}
}

func TestAgeMaxAgeRoundsDownAndKeepsUntouchedOptions(t *testing.T) {
	withMA := func(v uint32) *coap.Message {
		m := content("x", 1)
		m.Options = m.Options.SetUint(coap.MaxAge, v)
		return m
	}
	for _, tc := range []struct {
		name string
		n    *coap.Message
		age  time.Duration
		want int64 // -1: no Max-Age option
	}{
		{"fresh, no option stays absent", content("x", 1), 500 * time.Millisecond, -1},
		{"default 60 s less 1.5 s is 58", content("x", 1), 1500 * time.Millisecond, 58},
		{"explicit 10 less 3 is 7", withMA(10), 3 * time.Second, 7},
		{"expired is 0", withMA(10), 11 * time.Second, 0},
		{"0.9 s left is 0, never rounded up", withMA(2), 1100 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(coap.Options(nil), tc.n.Options...)
			got := ageMaxAge(opts, tc.n, tc.age)
			v, ok := got.Uint(coap.MaxAge)
			switch {
			case tc.want < 0 && ok:
				t.Fatalf("Max-Age %d added", v)
			case tc.want >= 0 && (!ok || int64(v) != tc.want):
				t.Fatalf("Max-Age = %d (%v), want %d", v, ok, tc.want)
			}
			if !got.Has(coap.ContentFormat) || !got.Has(coap.Observe) {
				t.Fatal("other options lost")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"con", func(c *Config) { c.NotifyType = NotifyCON }, true},
		{"zero observers", func(c *Config) { c.MaxObservers = 0 }, false},
		{"per client over total", func(c *Config) { c.MaxPerClient = c.MaxObservers + 1 }, false},
		{"no con interval", func(c *Config) { c.CONInterval.Duration = 0 }, false},
		{"con interval over 24h (RFC 7641 §4.5)", func(c *Config) { c.CONInterval.Duration = 25 * time.Hour }, false},
		{"bad type", func(c *Config) { c.NotifyType = "ack" }, false},
		{"every notification CON by count", func(c *Config) { c.CONEvery = 1 }, true},
		{"con_every 0", func(c *Config) { c.CONEvery = 0 }, false},
		{"con_every over 16 bits", func(c *Config) { c.CONEvery = 1 << 16 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.edit(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v", err)
			}
		})
	}
	var d Duration
	if err := d.UnmarshalText([]byte("90s")); err != nil || d.Duration != 90*time.Second {
		t.Fatalf("UnmarshalText: %v %v", d, err)
	}
	if err := d.UnmarshalText([]byte("soon")); err == nil {
		t.Fatal("bad duration accepted")
	}
}

func TestDefaultKey(t *testing.T) {
	req := func(code coap.Code, edit func(*coap.Message)) *coap.Request {
		m := &coap.Message{Code: code}
		edit(m)
		return &coap.Request{Msg: m, Peer: netip.MustParseAddrPort("127.0.0.1:1")}
	}
	proxyURI := func(u string) func(*coap.Message) {
		return func(m *coap.Message) { m.Options = m.Options.Insert(coap.ProxyURI, []byte(u)) }
	}
	base, ok := DefaultKey(req(coap.GET, proxyURI("coap://node.example/temp")))
	if !ok {
		t.Fatal("no key")
	}
	for _, tc := range []struct {
		name string
		r    *coap.Request
		same bool
		ok   bool
	}{
		{"same URI, host case and default port", req(coap.GET, proxyURI("coap://NODE.example:5683/temp")), true, true},
		{"Proxy-Scheme with Uri-* options", req(coap.GET, func(m *coap.Message) {
			m.Options = m.Options.Insert(coap.URIHost, []byte("node.example"))
			m.Options = m.Options.Insert(coap.URIPath, []byte("temp"))
			m.Options = m.Options.Insert(coap.ProxyScheme, []byte("coap"))
		}), true, true},
		{"Observe is not a key (RFC 7641 §2)", req(coap.GET, func(m *coap.Message) {
			proxyURI("coap://node.example/temp")(m)
			m.Options = m.Options.SetUint(coap.Observe, 0)
		}), true, true},
		{"ETag is not a key", req(coap.GET, func(m *coap.Message) {
			proxyURI("coap://node.example/temp")(m)
			m.Options = m.Options.Insert(coap.ETag, []byte{1})
		}), true, true},
		{"other path", req(coap.GET, proxyURI("coap://node.example/hum")), false, true},
		{"Accept is a key", req(coap.GET, func(m *coap.Message) {
			proxyURI("coap://node.example/temp")(m)
			m.Options = m.Options.SetUint(coap.Accept, 50)
		}), false, true},
		{"FETCH payload is a key", req(coap.FETCH, func(m *coap.Message) {
			proxyURI("coap://node.example/temp")(m)
			m.Payload = []byte("a")
		}), false, true},
		{"coaps differs", func() *coap.Request {
			r := req(coap.GET, proxyURI("coap://node.example/temp"))
			r.Secure = true
			return r
		}(), false, true},
		{"Proxy-Uri with Uri-Path is refused", req(coap.GET, func(m *coap.Message) {
			proxyURI("coap://node.example/temp")(m)
			m.Options = m.Options.Insert(coap.URIPath, []byte("x"))
		}), false, false},
		{"POST has no key", req(coap.POST, proxyURI("coap://node.example/temp")), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, ok := DefaultKey(tc.r)
			if ok != tc.ok {
				t.Fatalf("ok = %v", ok)
			}
			if ok && (k == base) != tc.same {
				t.Fatalf("same key = %v, want %v", k == base, tc.same)
			}
		})
	}
}

func TestObserversShareOneRegistrationAndGetTheirOwnNumbers(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	var ws []*watcher
	for range 5 {
		ws = append(ws, observeAt(t, client, r.proxy, get("temp")))
	}
	if n := r.origin.registrations(); n != 1 {
		t.Fatalf("origin saw %d registrations, want 1", n)
	}
	for i := range 20 {
		r.origin.push(t, content(fmt.Sprintf("v%d", i+1), uint32(i+2)), false)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "every observer on v20", func() bool {
		for _, w := range ws {
			if w.last() != "v20" {
				return false
			}
		}
		return true
	})
	for _, w := range ws {
		w.checkIncreasing(t)
		if w.obs == nil {
			t.Fatal("not registered")
		}
	}
	// A late observer is answered from the hub at once, with its own
	// number and the current state.
	late := observeAt(t, client, r.proxy, get("temp"))
	if string(late.first.Payload) != "v20" || r.origin.registrations() != 1 {
		t.Fatalf("late observer got %q, origin registrations %d", late.first.Payload, r.origin.registrations())
	}
	ws = append(ws, late)
	// Go clients cancel (Observe=1): the last one leaving cancels upstream.
	for i, w := range ws {
		if err := w.obs.Cancel(context.Background()); err != nil {
			t.Fatal(err)
		}
		if i < len(ws)-1 && r.origin.cancelled() != 0 {
			t.Fatal("upstream cancelled while observers remain")
		}
	}
	testutil.EventuallyWithin(t, 5*time.Second, "upstream cancel", func() bool { return r.origin.cancelled() == 1 })
	s := r.hub.Stats()
	if s.Observers != 0 || s.Upstreams != 0 || s.Deregistrations != 6 {
		t.Fatalf("stats after cancel: %+v", s)
	}
}

func TestConcurrentRegistrationsAreCoalesced(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	gate := make(chan struct{})
	r.origin.mu.Lock()
	r.origin.gate, r.origin.entered = gate, make(chan struct{}, 1)
	r.origin.mu.Unlock()
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	var wg sync.WaitGroup
	ws := make([]*watcher, 8)
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[i] = observeAt(t, client, r.proxy, get("temp"))
		}()
	}
	<-r.origin.entered
	testutil.EventuallyWithin(t, 5*time.Second, "8 waiters", func() bool {
		r.hub.mu.Lock()
		defer r.hub.mu.Unlock()
		for _, e := range r.hub.entries {
			return len(e.waiters) == 8
		}
		return false
	})
	close(gate)
	wg.Wait()
	if n := r.origin.registrations(); n != 1 {
		t.Fatalf("origin saw %d registrations, want 1", n)
	}
	for _, w := range ws {
		if w.obs == nil || string(w.first.Payload) != "v0" {
			t.Fatalf("first response %v", w.first)
		}
	}
	r.origin.push(t, content("v1", 2), false)
	testutil.EventuallyWithin(t, 5*time.Second, "v1 everywhere", func() bool {
		for _, w := range ws {
			if w.last() != "v1" {
				return false
			}
		}
		return true
	})
}

func TestNotObservableOrErrorAnswersEveryoneAndRegistersNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(o *origin)
		code  coap.Code
	}{
		{"no Observe in response", func(o *origin) { o.noObs = true }, coap.Content},
		{"4.04", func(o *origin) { o.code = coap.NotFound }, coap.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Defaults(), coap.Params{})
			r.origin.mu.Lock()
			tc.setup(r.origin)
			r.origin.mu.Unlock()
			client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
			w := observeAt(t, client, r.proxy, get("temp"))
			if w.obs != nil || w.first.Code != tc.code || w.first.Options.Has(coap.Observe) {
				t.Fatalf("got %v, observation %v", w.first, w.obs)
			}
			if s := r.hub.Stats(); s.Observers != 0 || s.Upstreams != 0 {
				t.Fatalf("stats: %+v", s)
			}
		})
	}
}

// PR4.1: notifications out of sequence never reach an observer.
func TestStaleUpstreamNotificationsAreDiscarded(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	r.origin.mu.Lock()
	r.origin.seq = 1<<24 - 3 // the origin's numbers wrap during the test
	r.origin.mu.Unlock()
	w := observeAt(t, client, r.proxy, get("temp"))
	steps := []struct {
		payload string
		seq     uint32
		stale   bool
	}{
		{"a", 1<<24 - 2, false},
		{"stale-1", 1<<24 - 4, true},
		{"b", 1, false}, // wrapped: newer
		{"stale-2", 1<<24 - 1, true},
		{"stale-3", 1, true}, // a duplicate number is not newer
		{"c", 5, false},
	}
	for _, s := range steps {
		r.origin.push(t, content(s.payload, s.seq), false)
		if !s.stale {
			testutil.EventuallyWithin(t, 5*time.Second, s.payload, func() bool { return w.last() == s.payload })
		}
	}
	for _, p := range w.payloads() {
		if len(p) > 5 && p[:5] == "stale" {
			t.Fatalf("stale notification %q delivered", p)
		}
	}
	w.checkIncreasing(t)
	testutil.EventuallyWithin(t, 5*time.Second, "3 dropped", func() bool { return r.hub.Stats().DroppedStale == 3 })
}

// The 128-second rule (RFC 7641 §3.4): after a long silence any number
// counts as newer.
func TestStaleRuleYieldsAfter128Seconds(t *testing.T) {
	clk := newFakeClock()
	r := newRig(t, Defaults(), coap.Params{}, WithClock(clk))
	r.origin.mu.Lock()
	r.origin.maxAge = 3600 // no liveness re-registration in between
	r.origin.mu.Unlock()
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	w := observeAt(t, client, r.proxy, get("temp"))
	long := func(p string, seq uint32) *coap.Message {
		n := content(p, seq)
		n.Options = n.Options.SetUint(coap.MaxAge, 3600)
		return n
	}
	r.origin.push(t, long("a", 100), false)
	testutil.EventuallyWithin(t, 5*time.Second, "a", func() bool { return w.last() == "a" })
	clk.Advance(129 * time.Second)
	if r.origin.registrations() != 1 {
		t.Fatal("re-registered")
	}
	r.origin.push(t, long("restarted", 3), false)
	testutil.EventuallyWithin(t, 5*time.Second, "restarted", func() bool { return w.last() == "restarted" })
	w.checkIncreasing(t)
}

func TestDeregistration(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params coap.Params
		cfg    func(*Config)
		leave  func(t *testing.T, c *rawClient, r *rig, reg *coap.Message)
	}{
		{"Observe=1 with the same token", coap.Params{}, nil, func(t *testing.T, c *rawClient, r *rig, reg *coap.Message) {
			m := get("temp")
			m.Type, m.MID, m.Token = coap.Confirmable, 999, reg.Token
			m.Options = m.Options.SetUint(coap.Observe, 1)
			c.send(m)
			resp := c.read(5 * time.Second)
			if resp.Options.Has(coap.Observe) {
				t.Fatal("deregistration answered with Observe")
			}
		}},
		{"RST to a notification", coap.Params{}, nil, func(t *testing.T, c *rawClient, r *rig, reg *coap.Message) {
			r.origin.push(t, content("v1", 2), false)
			n := c.read(5 * time.Second)
			c.empty(coap.Reset, n.MID)
		}},
		{"CON notification timing out", coap.Params{AckTimeout: 20 * time.Millisecond, MaxRetransmit: 1}, func(c *Config) { c.NotifyType = NotifyCON }, func(t *testing.T, c *rawClient, r *rig, reg *coap.Message) {
			r.origin.push(t, content("v1", 2), false)
			n := c.read(5 * time.Second)
			if n.Type != coap.Confirmable {
				t.Fatalf("notification type %v", n.Type)
			}
			// Never acknowledged.
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			r := newRig(t, cfg, tc.params)
			c := newRawClient(t, r.proxy)
			reg := c.register("temp", "tok1")
			if !reg.Options.Has(coap.Observe) {
				t.Fatalf("not registered: %v", reg)
			}
			tc.leave(t, c, r, reg)
			testutil.EventuallyWithin(t, 10*time.Second, "observer removed", func() bool { return r.hub.Stats().Observers == 0 })
			testutil.EventuallyWithin(t, 10*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })
			if s := r.hub.Stats(); s.Deregistrations != 1 || s.Upstreams != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// A slow observer holding a CON unacknowledged delays nobody else, and
// gets only the newest state once it acknowledges.
func TestSlowObserverDoesNotBlockOthersAndGetsLatest(t *testing.T) {
	cfg := Defaults()
	cfg.NotifyType = NotifyCON
	// Long ACK timeout: the slow client's CON stays outstanding.
	r := newRig(t, cfg, coap.Params{AckTimeout: 30 * time.Second})
	slow := newRawClient(t, r.proxy)
	if reg := slow.register("temp", "slow"); !reg.Options.Has(coap.Observe) {
		t.Fatal("slow client not registered")
	}
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	fast := observeAt(t, client, r.proxy, get("temp"))
	r.origin.push(t, content("v1", 2), false)
	first := slow.read(5 * time.Second) // a CON it sits on
	for i := 2; i <= 50; i++ {
		r.origin.push(t, content(fmt.Sprintf("v%d", i), uint32(i+1)), false)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "fast observer on v50", func() bool { return fast.last() == "v50" })
	if _, err := slow.tryRead(100 * time.Millisecond); err == nil {
		t.Fatal("a second notification while a CON is outstanding")
	}
	slow.empty(coap.Acknowledgement, first.MID)
	n := slow.read(5 * time.Second)
	if string(n.Payload) != "v50" {
		t.Fatalf("slow observer got %q after its ACK, want the latest v50", n.Payload)
	}
	v1, _ := first.Options.Uint(coap.Observe)
	v2, _ := n.Options.Uint(coap.Observe)
	if (v2-v1)&seqMask != 1 {
		t.Fatalf("slow observer numbers %d then %d", v1, v2)
	}
	if s := r.hub.Stats(); s.Skipped < 40 {
		t.Fatalf("skipped %d, want the intermediate states skipped", s.Skipped)
	}
	fast.checkIncreasing(t)
}

// RFC 8613 §4.1.3.5: OSCORE observations are never aggregated and the
// outer Observe goes through as the origin sent it.
func TestOSCOREObservationsAreNotAggregated(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	protected := func(piv byte) *coap.Message {
		m := &coap.Message{Code: coap.FETCH, Payload: []byte{0xde, 0xad, piv}}
		m.Options = m.Options.Insert(coap.OSCORE, []byte{0x09, piv})
		return m
	}
	a := observeAt(t, client, r.proxy, protected(1))
	b := observeAt(t, client, r.proxy, protected(2))
	if n := r.origin.registrations(); n != 2 {
		t.Fatalf("origin saw %d registrations, want 2", n)
	}
	for _, w := range []*watcher{a, b} {
		if v, _ := w.first.Options.Uint(coap.Observe); v != 1 {
			t.Fatalf("first response Observe %d, want the origin's 1", v)
		}
	}
	n := &coap.Message{Code: coap.Content, Payload: []byte{1, 2, 3}}
	n.Options = n.Options.SetUint(coap.Observe, 77)
	n.Options = n.Options.Insert(coap.OSCORE, []byte{0x01, 0x05})
	n.Options = n.Options.SetUint(coap.MaxAge, 0)
	r.origin.push(t, n, false)
	for _, w := range []*watcher{a, b} {
		testutil.EventuallyWithin(t, 5*time.Second, "protected notification", func() bool { return len(w.payloads()) == 1 })
		got := w.got[0]
		if !got.Options.Equal(n.Options) || string(got.Payload) != string(n.Payload) {
			t.Fatalf("protected notification changed: %v %x", got.Options, got.Payload)
		}
	}
	if err := a.obs.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "one upstream left", func() bool { return r.hub.Stats().Upstreams == 1 })
}

func TestMaxAgeLivenessReregisters(t *testing.T) {
	clk := newFakeClock()
	r := newRig(t, Defaults(), coap.Params{}, WithClock(clk))
	r.origin.mu.Lock()
	r.origin.maxAge = 10
	r.origin.mu.Unlock()
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	w := observeAt(t, client, r.proxy, get("temp"))
	clk.Advance(10*time.Second + livenessMargin - time.Millisecond)
	if r.origin.registrations() != 1 {
		t.Fatal("re-registered before Max-Age ran out")
	}
	r.origin.mu.Lock()
	r.origin.first = "after"
	r.origin.seq = 1 // a restarted origin: numbers start over
	r.origin.mu.Unlock()
	clk.Advance(time.Millisecond)
	testutil.EventuallyWithin(t, 5*time.Second, "re-registration", func() bool { return r.origin.registrations() == 2 })
	// The new registration's first response reaches the observer as a
	// notification, and the old registration is cancelled.
	testutil.EventuallyWithin(t, 5*time.Second, "new state", func() bool { return w.last() == "after" })
	testutil.EventuallyWithin(t, 5*time.Second, "old registration cancelled", func() bool { return r.origin.cancelled() == 1 })
	r.origin.mu.Lock()
	newest := r.origin.regs[1]
	r.origin.mu.Unlock()
	r.origin.pushTo(t, newest, content("later", 2), false)
	testutil.EventuallyWithin(t, 5*time.Second, "later", func() bool { return w.last() == "later" })
	w.checkIncreasing(t)
	// An unprotected observation is kept alive, never ended by the timer.
	if s := r.hub.Stats(); s.Observers != 1 || s.Upstreams != 1 || s.ProtectedExpired != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestErrorNotificationEndsObservationForAll(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	ws := []*watcher{observeAt(t, client, r.proxy, get("temp")), observeAt(t, client, r.proxy, get("temp"))}
	r.origin.push(t, &coap.Message{Code: coap.NotFound, Payload: []byte("gone")}, false)
	for _, w := range ws {
		testutil.EventuallyWithin(t, 5*time.Second, "4.04", func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return len(w.got) == 1 && w.got[0].Code == coap.NotFound
		})
	}
	testutil.EventuallyWithin(t, 5*time.Second, "hub empty", func() bool {
		s := r.hub.Stats()
		return s.Observers == 0 && s.Upstreams == 0
	})
	// A new registration starts a new upstream observation.
	observeAt(t, client, r.proxy, get("temp"))
	if n := r.origin.registrations(); n != 2 {
		t.Fatalf("registrations %d", n)
	}
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     func(*Config)
		clients []string // source address of each registration
		want    []bool   // whether it becomes an observer
	}{
		{"max_per_client", func(c *Config) { c.MaxPerClient = 2 }, []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"}, []bool{true, true, false, true}},
		{"max_observers", func(c *Config) { c.MaxObservers, c.MaxPerClient = 3, 3 }, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}, []bool{true, true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			tc.cfg(&cfg)
			r := newRig(t, cfg, coap.Params{})
			for i, addr := range tc.clients {
				c, _ := endpoint(t, addr+":0", coap.EndpointConfig{})
				w := observeAt(t, c, r.proxy, get("temp"))
				if (w.obs != nil) != tc.want[i] {
					t.Fatalf("registration %d from %s: observer %v, want %v", i, addr, w.obs != nil, tc.want[i])
				}
				if w.first.Code != coap.Content || string(w.first.Payload) != "v0" {
					t.Fatalf("registration %d not served: %v", i, w.first)
				}
			}
			if r.origin.registrations() != 1 {
				t.Fatalf("origin registrations %d", r.origin.registrations())
			}
			if s := r.hub.Stats(); s.OverLimit != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// WithClientLimit gives the addresses it knows their own bound in place
// of max_per_client; MaxObservers still bounds them.
func TestClientLimitReplacesMaxPerClient(t *testing.T) {
	cfg := Defaults()
	cfg.MaxObservers, cfg.MaxPerClient = 4, 1
	trusted := netip.MustParseAddr("127.0.0.1")
	r := newRig(t, cfg, coap.Params{}, WithClientLimit(func(a netip.Addr) (int, bool) {
		return 2, a == trusted
	}))
	for i, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true}, {"127.0.0.1", true}, {"127.0.0.1", false}, // its own bound, 2
		{"127.0.0.2", true}, {"127.0.0.2", false}, // max_per_client, 1
		{"127.0.0.3", true}, {"127.0.0.4", false}, // max_observers, 4
	} {
		c, _ := endpoint(t, tc.addr+":0", coap.EndpointConfig{})
		w := observeAt(t, c, r.proxy, get("temp"))
		if (w.obs != nil) != tc.want {
			t.Fatalf("registration %d from %s: observer %v, want %v", i, tc.addr, w.obs != nil, tc.want)
		}
	}
	if s := r.hub.Stats(); s.Observers != 4 || s.OverLimit != 3 {
		t.Fatalf("observers %d, over limit %d; want 4 and 3", s.Observers, s.OverLimit)
	}
}

// A CON registration retransmitted after its answer (the client missed
// it) is a new request to the endpoint, which forgets answered GETs: the
// hub updates the observer and answers again (RFC 7641 §4.1), and the
// observer keeps getting notifications, numbered after that answer.
func TestRetransmittedRegistrationKeepsTheObserver(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	c := newRawClient(t, r.proxy)
	reg := get("temp")
	reg.Type, reg.MID, reg.Token = coap.Confirmable, 7, []byte{0x01}
	reg.Options = reg.Options.SetUint(coap.Observe, 0)
	c.send(reg)
	first := c.read(5 * time.Second)
	c.send(reg) // the same datagram again
	again := c.read(5 * time.Second)
	if again.MID != reg.MID || string(again.Payload) != string(first.Payload) {
		t.Fatalf("the retransmission got %v, want the state again in an ACK", again)
	}
	v1, _ := first.Options.Uint(coap.Observe)
	v2, _ := again.Options.Uint(coap.Observe)
	if v2 <= v1 {
		t.Fatalf("Observe %d, then %d for the retransmission", v1, v2)
	}
	if s := r.hub.Stats(); s.Observers != 1 || s.Upstreams != 1 {
		t.Fatalf("after the retransmission: %+v", s)
	}
	for i := 1; i <= 3; i++ {
		r.origin.push(t, content(fmt.Sprintf("s%d", i), uint32(i+1)), false)
		n := c.read(5 * time.Second)
		v, _ := n.Options.Uint(coap.Observe)
		if string(n.Payload) != fmt.Sprintf("s%d", i) || v <= v2 {
			t.Fatalf("notification %d: %q Observe %d after %d", i, n.Payload, v, v2)
		}
		v2 = v
		if n.Type == coap.Confirmable {
			c.empty(coap.Acknowledgement, n.MID)
		}
	}
}
