package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Seed §3.3 (caching), §3.4 (Observe) and §3.5 (publish-subscribe) with
// signed representations (e2e/signed) and the misbehaving relay as the
// caching proxy or broker.

func sigSetup(t *testing.T) (keySigner, *sigOrigin, *relay, *coap.Endpoint) {
	t.Helper()
	s := newSigner(t, "node7")
	o := newSigOrigin(t, s)
	o.set("temp", 0, "21.5")
	o.set("alarm", 0, "off")
	o.set("temp.json", 50, `{"t":21.5}`)
	c, _ := endpoint(t, nil)
	return s, o, newRelay(t, o.addr), c
}

func mustGet(t *testing.T, c *coap.Endpoint, r *relay, name string) *coap.Message {
	t.Helper()
	resp, err := sigGet(t, c, r.addr(), name)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// serveFrom makes the relay answer requests from the given response, as
// a cache does (PR3.1), without asking the origin. The answer is recorded
// as a made-up message (mustHaveTampered, madeUp).
func serveFrom(r *relay, resp *coap.Message) {
	r.setHook(func(d dir, client netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == up && isPayloadMsg(m) {
			out := resp.Clone()
			out.Type, out.MID, out.Token = coap.Acknowledgement, m.MID, m.Token
			r.recordEdit(down, nil, out)
			r.send(down, client, out)
			return
		}
		fwd(m)
	})
}

// madeUp says whether the relay sent a message of its own making with
// the given payload.
func madeUp(payload []byte) func(before, after *coap.Message) bool {
	return func(b, a *coap.Message) bool { return b.Code == coap.Empty && bytes.Equal(a.Payload, payload) }
}

// payloadBecame says whether a change replaced the payload by p.
func payloadBecame(p []byte) func(before, after *coap.Message) bool {
	return func(b, a *coap.Message) bool { return !bytes.Equal(b.Payload, p) && bytes.Equal(a.Payload, p) }
}

func TestT1_3_ProxyAsCacheCannotForgeRepresentations(t *testing.T) {
	cases := []struct {
		id   string
		name string // what the client asks for
		// tamper sets the relay up and returns what the tampering it
		// makes looks like (mustHaveTampered).
		tamper func(t *testing.T, s keySigner, o *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool
		want   error
	}{
		{"T1:3.2 modified payload", "temp", func(t *testing.T, _ keySigner, _ *sigOrigin, r *relay, _ *coap.Endpoint) func(before, after *coap.Message) bool {
			r.setHook(r.onPayload(down, func(m *coap.Message) { m.Payload[len(m.Payload)-1] ^= 1 }))
			return onlyPayloadChanged
		}, signed.ErrBadSignature},
		{"T1:3.4 other variant", "temp", func(t *testing.T, _ keySigner, _ *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool {
			resp := mustGet(t, c, r, "temp.json")
			serveFrom(r, resp)
			return madeUp(resp.Payload)
		}, signed.ErrWrongResource},
		{"T1:3.8 other resource", "alarm", func(t *testing.T, _ keySigner, _ *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool {
			resp := mustGet(t, c, r, "temp")
			serveFrom(r, resp)
			return madeUp(resp.Payload)
		}, signed.ErrWrongResource},
		{"T1:3.8 other server", "temp", func(t *testing.T, _ keySigner, _ *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool {
			other := newSigOrigin(t, newSigner(t, "node9"))
			other.set("temp", 0, "99")
			resp, err := sigGet(t, c, other.addr, "temp")
			if err != nil {
				t.Fatal(err)
			}
			serveFrom(r, resp)
			return madeUp(resp.Payload)
		}, signed.ErrUnknownKey},
		{"T1:3.9 old response", "temp", func(t *testing.T, _ keySigner, o *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool {
			// The response the proxy cached before the client saw a newer
			// one, served again with a fresh Max-Age.
			old := lastPayload(r.messages(down)).Clone()
			old.Options = old.Options.SetUint(coap.MaxAge, 3600)
			o.set("temp", 0, "23.0")
			if _, err := sigGet(t, c, o.addr, "temp"); err != nil {
				t.Fatal(err)
			}
			serveFrom(r, old)
			return madeUp(old.Payload)
		}, signed.ErrStale},
		{"T1:3.11 colluding client", "temp", func(t *testing.T, s keySigner, _ *sigOrigin, r *relay, c *coap.Endpoint) func(before, after *coap.Message) bool {
			// A client holding what every client holds (public key, group
			// key) signs a changed value under the origin's kid.
			attacker := newSigner(t, string(s.KID()))
			rep, err := attacker.Sign(resourceURI("temp"), 0, []byte("-40"))
			if err != nil {
				t.Fatal(err)
			}
			r.setHook(r.onPayload(down, func(m *coap.Message) { m.Payload = rep }))
			return payloadBecame(rep)
		}, signed.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			s, o, r, c := sigSetup(t)
			v := verifierFor(t, s)
			// The client has seen the current representation once.
			if _, _, err := v.Verify(mustGet(t, c, r, tc.name).Payload, expect(tc.name)); err != nil {
				t.Fatal(err)
			}
			intended := tc.tamper(t, s, o, r, c)
			resp := mustGet(t, c, r, tc.name)
			r.mustHaveTampered(t, down, intended)
			if _, _, err := v.Verify(resp.Payload, expect(tc.name)); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	t.Run("T1:3.4 content format of the same resource", func(t *testing.T) {
		s, _, r, c := sigSetup(t)
		// The representation is JSON (signed Content-Format 50); the
		// proxy relabels the response text/plain. A client that asked
		// for text/plain checks the signed Content-Format, not the option.
		r.setHook(r.onPayload(down, func(m *coap.Message) { m.Options = m.Options.SetUint(coap.ContentFormat, 0) }))
		resp := mustGet(t, c, r, "temp.json")
		r.mustHaveTampered(t, down, contentFormatBecame(0))
		if cf, _ := resp.Options.Uint(coap.ContentFormat); cf != 0 {
			t.Fatalf("the client got Content-Format %d, want the relabelled 0", cf)
		}
		want := signed.Expectation{URI: resourceURI("temp.json"), ContentFormat: 0}
		v := verifierFor(t, s)
		if _, _, err := v.Verify(resp.Payload, want); !errors.Is(err, signed.ErrWrongContentFormat) {
			t.Fatalf("%v, want ErrWrongContentFormat", err)
		}
		want.ContentFormat = 50
		if _, meta, err := v.Verify(resp.Payload, want); err != nil || meta.ContentFormat != 50 {
			t.Fatalf("the signed Content-Format: %d, %v; want 50", meta.ContentFormat, err)
		}
	})
}

// contentFormatBecame says whether a change set the Content-Format
// option, which was something else, to cf.
func contentFormatBecame(cf uint32) func(before, after *coap.Message) bool {
	return func(b, a *coap.Message) bool {
		was, _ := b.Options.Uint(coap.ContentFormat)
		now, ok := a.Options.Uint(coap.ContentFormat)
		return was != cf && ok && now == cf && bytes.Equal(a.Payload, b.Payload)
	}
}

func TestT1_3_6ChangedResponseCodeIsNoticedByAVerifyingClient(t *testing.T) {
	s, _, r, c := sigSetup(t)
	r.setHook(r.onPayload(down, func(m *coap.Message) { m.Code = coap.NotFound }))
	resp := mustGet(t, c, r, "temp")
	r.mustHaveTampered(t, down, func(b, a *coap.Message) bool { return b.Code == coap.Content && a.Code == coap.NotFound })
	// The payload still verifies as the current representation of the
	// resource, which only a 2.05 carries: the code was changed on the
	// way. A proxy that also drops the payload is a denial of service.
	if _, _, err := verifierFor(t, s).Verify(resp.Payload, expect("temp")); resp.Code != coap.NotFound || err != nil {
		t.Fatalf("code %v, verify %v", resp.Code, err)
	}
}

func TestT1_3_10ValidResponseFromTheProxyCannotBeVerified(t *testing.T) {
	// NR3.6: a 2.03 has no payload, so nothing in it is signed.
	_, o, r, c := sigSetup(t)
	serveFrom(r, &coap.Message{Code: coap.Valid})
	resp := mustGet(t, c, r, "temp")
	r.mustHaveTampered(t, down, func(b, a *coap.Message) bool { return b.Code == coap.Empty && a.Code == coap.Valid })
	if resp.Code != coap.Valid || len(resp.Payload) != 0 || o.served() != 0 {
		t.Fatalf("got %v", resp)
	}
}

func TestT2_3_2UnsolicitedResponseIsRejectedByTheClient(t *testing.T) {
	_, _, r, c := sigSetup(t)
	mustGet(t, c, r, "temp")
	before := c.Stats().Unmatched
	resp := &coap.Message{Type: coap.NonConfirmable, Code: coap.Content, MID: 99, Token: []byte("unasked!"), Payload: []byte("x")}
	r.send(down, lastClient(r), resp)
	testutil.Eventually(t, "the unsolicited response rejected: unmatched, and a Reset sent", func() bool {
		s := c.Stats()
		return s.Unmatched != before && s.ResetsSent != 0
	})
}

func TestT2_3_3FloodOfOldAndForgedRepresentationsIsRejected(t *testing.T) {
	s, o, r, c := sigSetup(t)
	v := verifierFor(t, s)
	current := mustGet(t, c, r, "temp")
	if _, _, err := v.Verify(current.Payload, expect("temp")); err != nil {
		t.Fatal(err)
	}
	forged := current.Clone()
	forged.Payload[len(forged.Payload)-1] ^= 1
	// The proxy answers each request itself, alternately with the
	// representation the client already has and a forged one.
	var n atomic.Int32
	r.setHook(func(d dir, client netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d != up || !isPayloadMsg(m) {
			fwd(m)
			return
		}
		out := current.Clone()
		if n.Add(1)%2 == 0 {
			out = forged.Clone()
		}
		out.Type, out.MID, out.Token = coap.Acknowledgement, m.MID, m.Token
		r.recordEdit(down, nil, out)
		r.send(down, client, out)
	})
	for i := range 20 {
		resp := mustGet(t, c, r, "temp")
		want := signed.ErrStale
		if i%2 == 1 {
			want = signed.ErrBadSignature
		}
		if _, _, err := v.Verify(resp.Payload, expect("temp")); !errors.Is(err, want) {
			t.Fatalf("response %d: %v, want %v", i, err, want)
		}
	}
	r.mustHaveTampered(t, down, madeUp(current.Payload))
	r.mustHaveTampered(t, down, madeUp(forged.Payload))
	if o.served() != 1 {
		t.Fatalf("the origin served %d requests, want only the first", o.served())
	}
	// Unasked copies sent straight at the client: its message layer
	// matches them to no request and drops them.
	before := c.Stats().Unmatched
	for range 20 {
		m := renew(current, false)
		m.Token = []byte("flood")
		r.send(down, lastClient(r), m)
	}
	testutil.Eventually(t, "the client to match none of the 20 unasked responses to a request", func() bool { return c.Stats().Unmatched >= before+20 })
}

func TestT3_3_4ReorderedResponsesAreErrStale(t *testing.T) {
	s, _, r, c := sigSetup(t)
	v := verifierFor(t, s)
	var mu sync.Mutex
	var held func()
	r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		mu.Lock()
		defer mu.Unlock()
		if d != down || !isPayloadMsg(m) {
			fwd(m)
			return
		}
		if held == nil {
			held = func() { fwd(m) }
			return
		}
		fwd(m)
		time.AfterFunc(50*time.Millisecond, held)
	})
	got := make(chan *coap.Message, 2)
	go func() { resp, _ := sigGet(t, c, r.addr(), "temp"); got <- resp }()
	testutil.Eventually(t, "the relay to hold the first response", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return held != nil
	})
	go func() { resp, _ := sigGet(t, c, r.addr(), "temp"); got <- resp }()
	newer, older := <-got, <-got
	if _, _, err := v.Verify(newer.Payload, expect("temp")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(older.Payload, expect("temp")); !errors.Is(err, signed.ErrStale) {
		t.Fatalf("older after newer: %v, want ErrStale", err)
	}
}

func TestT4_3_1SealedRepresentationIsNotReadable(t *testing.T) {
	s, o, r, c := sigSetup(t)
	gk := signed.GroupKey{ID: []byte("g1"), Alg: signed.AlgAESCCM1664128, Key: secret(7)}
	o.set("secret", 0, "door-code-4711")
	// Signed only: integrity, no confidentiality; the proxy reads it.
	mustGet(t, c, r, "secret")
	if !r.saw([]byte("door-code-4711")) {
		t.Fatal("a signed-only representation is readable; the test relay should have seen it")
	}
	r2 := newRelay(t, o.addr)
	o.mu.Lock()
	o.group = &gk
	o.mu.Unlock()
	resp := mustGet(t, c, r2, "secret")
	for _, leak := range []string{"door-code-4711", resourceURI("secret")} {
		if r2.saw([]byte(leak)) {
			t.Errorf("the proxy read %q of a sealed representation", leak)
		}
	}
	v := verifierFor(t, s)
	if err := v.AddGroupKey(gk); err != nil {
		t.Fatal(err)
	}
	want := expect("secret")
	want.RequireEncrypted = true
	if p, _, err := v.Verify(resp.Payload, want); err != nil || string(p) != "door-code-4711" {
		t.Fatalf("group member: %q, %v", p, err)
	}
}

func TestNR3_1RequestIsNotProtectedButTheClientSeesTheWrongResource(t *testing.T) {
	// T1:3.1, T1:3.3, T1:3.5, T1:3.7, T3:3.3 are out of the objectives:
	// the origin cannot tell a changed request. The client can tell that
	// the representation is not of the resource it asked for.
	s, o, r, c := sigSetup(t)
	r.setHook(r.onPayload(up, func(m *coap.Message) {
		m.Options = m.Options.Remove(coap.URIPath).Insert(coap.URIPath, []byte("alarm"))
	}))
	resp := mustGet(t, c, r, "temp")
	r.mustHaveTampered(t, up, func(b, a *coap.Message) bool {
		return strings.Join(coap.URIFromOptions(b.Options, "", "", 0).Path, "/") == "temp" &&
			strings.Join(coap.URIFromOptions(a.Options, "", "", 0).Path, "/") == "alarm"
	})
	if o.served() != 1 {
		t.Fatal("origin did not serve the changed request")
	}
	if _, _, err := verifierFor(t, s).Verify(resp.Payload, expect("temp")); !errors.Is(err, signed.ErrWrongResource) {
		t.Fatalf("%v, want ErrWrongResource", err)
	}
}

func TestNR3_2ResponseOptionsAreNotProtected(t *testing.T) {
	s, _, r, c := sigSetup(t)
	r.setHook(r.onPayload(down, func(m *coap.Message) {
		m.Options = m.Options.SetUint(coap.MaxAge, 86400).Set(coap.ETag, []byte("forged"))
	}))
	resp := mustGet(t, c, r, "temp")
	r.mustHaveTampered(t, down, func(b, a *coap.Message) bool {
		ma, _ := a.Options.Uint(coap.MaxAge)
		etag, _ := a.Options.Get(coap.ETag)
		return ma == 86400 && string(etag) == "forged" && bytes.Equal(a.Payload, b.Payload)
	})
	ma, _ := resp.Options.Uint(coap.MaxAge)
	if etag, _ := resp.Options.Get(coap.ETag); string(etag) != "forged" {
		t.Fatalf("the client got ETag %q, want the forged one", etag)
	}
	if _, _, err := verifierFor(t, s).Verify(resp.Payload, expect("temp")); err != nil || ma != 86400 {
		t.Fatalf("changed Max-Age and ETag go unnoticed by the signature: %v, %d", err, ma)
	}
}

func TestNR3_3ProxyReadsTheCacheKeyAndAsksOnItsOwn(t *testing.T) {
	// T2:3.1, T4:3.2: Uri-Host and Uri-Path are the cache key, in the
	// clear; a request the proxy makes itself looks like any other.
	_, o, r, c := sigSetup(t)
	mustGet(t, c, r, "temp")
	if !r.saw([]byte(host)) || !r.saw([]byte("temp")) {
		t.Fatal("the cache key should be readable")
	}
	r.send(up, lastClient(r), renew(r.messages(up)[0], true))
	testutil.Eventually(t, "the origin to serve the proxy's own request", func() bool { return o.served() == 2 })
}

func TestNR3_4DroppedResponseLooksLikeLoss(t *testing.T) {
	_, _, r, c := sigSetup(t)
	r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == up {
			fwd(m)
		}
	})
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIHost, []byte(host)).Insert(coap.URIPath, []byte("temp"))
	if _, err := c.Do(timeout(t, 300*time.Millisecond), r.addr(), req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want a plain timeout", err)
	}
}

func TestNR3_5DelayIsUndetectedInsideTheFreshnessWindow(t *testing.T) {
	s, _, r, c := sigSetup(t)
	v := verifierFor(t, s)
	// The proxy holds each response until the test lets it go; the
	// verifier's clock (Expectation.Now) stands for the time that passes
	// meanwhile, so no test waits for minutes.
	held := make(chan func(), 1)
	r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == down && isPayloadMsg(m) {
			select {
			case held <- func() { fwd(m) }:
				return
			default: // a response to a retransmission: let it pass
			}
		}
		fwd(m)
	})
	for _, tc := range []struct {
		delay time.Duration
		want  error
	}{
		{30 * time.Second, nil},             // inside the time window: undetectable
		{10 * time.Minute, signed.ErrStale}, // past it
	} {
		got := make(chan *coap.Message, 1)
		go func() {
			req := &coap.Message{Code: coap.GET}
			req.Options = req.Options.Insert(coap.URIHost, []byte(host)).Insert(coap.URIPath, []byte("temp"))
			resp, _ := c.Do(timeout(t, 10*time.Second), r.addr(), req)
			got <- resp
		}()
		var release func()
		select {
		case release = <-held:
		case <-time.After(5 * time.Second):
			t.Fatal("the relay held no response")
		}
		now := time.Now().Add(tc.delay)
		release()
		resp := <-got
		if resp == nil {
			t.Fatal("no response after the relay let it go")
		}
		want := expect("temp")
		want.MaxAge, want.Now = time.Minute, now
		if _, _, err := v.Verify(resp.Payload, want); !errors.Is(err, tc.want) {
			t.Fatalf("held for %v: %v, want %v", tc.delay, err, tc.want)
		}
	}
}

// ---- §3.4 Observe and §3.5 publish-subscribe: the broker ----

type pubsub struct {
	pub     keySigner
	b       *broker
	r       *relay
	pubEP   *coap.Endpoint
	subEP   *coap.Endpoint
	subAddr netip.AddrPort
	verify  *signed.Verifier
}

func pubsubSetup(t *testing.T) *pubsub {
	t.Helper()
	p := &pubsub{pub: newSigner(t, "publisher-1"), b: newBroker(t)}
	p.r = newRelay(t, p.b.addr)
	p.pubEP, _ = endpoint(t, nil)
	p.subEP, p.subAddr = endpoint(t, nil)
	p.verify = verifierFor(t, p.pub)
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "20.0"); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pubsub) check(t *testing.T, m *coap.Message, name string) error {
	t.Helper()
	_, _, err := p.verify.Verify(m.Payload, expect(name))
	return err
}

func TestT1_5_BrokerCannotForgeOrReorderPublications(t *testing.T) {
	// Each attack sets the broker (the relay) up and returns the
	// direction and the look of the tampering it makes (mustHaveTampered).
	type tampering struct {
		d        dir
		intended func(before, after *coap.Message) bool
	}
	cases := []struct {
		id     string
		attack func(t *testing.T, p *pubsub) tampering
		want   error
	}{
		{"T1:5.1 modified payload", func(t *testing.T, p *pubsub) tampering {
			p.r.setHook(p.r.onNote(func(m *coap.Message) { m.Payload[len(m.Payload)-1] ^= 1 }))
			return tampering{down, onlyPayloadChanged}
		}, signed.ErrBadSignature},
		{"T1:5.4 modified before storage", func(t *testing.T, p *pubsub) tampering {
			p.r.setHook(p.r.onPayload(up, func(m *coap.Message) {
				if m.Code == coap.PUT {
					m.Payload[len(m.Payload)-1] ^= 1
				}
			}))
			return tampering{up, func(b, a *coap.Message) bool { return a.Code == coap.PUT && onlyPayloadChanged(b, a) }}
		}, signed.ErrBadSignature},
		{"T1:5.5 publication of another topic", func(t *testing.T, p *pubsub) tampering {
			if err := publish(t, p.pubEP, p.r.addr(), p.pub, "alarm", 0, "on"); err != nil {
				t.Fatal(err)
			}
			alarm := lastPUT(p.r)
			p.r.setHook(p.r.onNote(func(m *coap.Message) { m.Payload = alarm }))
			return tampering{down, payloadBecame(alarm)}
		}, signed.ErrWrongResource},
		{"T1:5.5 T3:5.4 old publication", func(t *testing.T, p *pubsub) tampering {
			old := lastPUT(p.r)
			p.r.setHook(p.r.onNote(func(m *coap.Message) { m.Payload = old }))
			return tampering{down, payloadBecame(old)}
		}, signed.ErrStale},
		{"T1:5.6 colluding subscriber", func(t *testing.T, p *pubsub) tampering {
			rep, err := newSigner(t, "publisher-1").Sign(resourceURI("temp"), 0, []byte("99"))
			if err != nil {
				t.Fatal(err)
			}
			p.r.setHook(p.r.onNote(func(m *coap.Message) { m.Payload = rep }))
			return tampering{down, payloadBecame(rep)}
		}, signed.ErrBadSignature},
		{"T2:5.1 publication the publisher never made", func(t *testing.T, p *pubsub) tampering {
			rep, err := newSigner(t, "broker").Sign(resourceURI("temp"), 0, []byte("99"))
			if err != nil {
				t.Fatal(err)
			}
			p.r.setHook(p.r.onNote(func(m *coap.Message) { m.Payload = rep }))
			return tampering{down, payloadBecame(rep)}
		}, signed.ErrUnknownKey},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			p := pubsubSetup(t)
			sub := subscribe(t, p.subEP, p.r.addr(), "temp")
			if err := p.check(t, sub.first, "temp"); err != nil {
				t.Fatal(err)
			}
			tm := tc.attack(t, p)
			if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "21.0"); err != nil {
				t.Fatal(err)
			}
			note, ok := sub.next(t, 5*time.Second)
			if !ok {
				t.Fatal("no notification")
			}
			p.r.mustHaveTampered(t, tm.d, tm.intended)
			if err := p.check(t, note, "temp"); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

// onNote applies f to the first notification to a subscriber.
func (r *relay) onNote(f func(m *coap.Message)) hook {
	var once sync.Once
	return func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == down && m.Options.Has(coap.Observe) {
			once.Do(func() { m = r.modify(d, m, f) })
		}
		fwd(m)
	}
}

// lastPUT is the payload of the last publication that passed the relay.
func lastPUT(r *relay) []byte {
	var out []byte
	for _, m := range r.messages(up) {
		if m.Code == coap.PUT {
			out = m.Payload
		}
	}
	return out
}

func TestT1_5_2ChangedContentFormatIsErrWrongContentFormat(t *testing.T) {
	p := pubsubSetup(t)
	// The publisher publishes JSON (signed Content-Format 50); the broker
	// relabels the publication text/plain on its way to the subscriber.
	// A subscriber that asks for text/plain checks the signed format,
	// not the option, and learns the real one.
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "cfg", 50, `{"a":1}`); err != nil {
		t.Fatal(err)
	}
	p.r.setHook(p.r.onPayload(down, func(m *coap.Message) { m.Options = m.Options.SetUint(coap.ContentFormat, 0) }))
	sub := subscribe(t, p.subEP, p.r.addr(), "cfg")
	p.r.mustHaveTampered(t, down, contentFormatBecame(0))
	if cf, _ := sub.first.Options.Uint(coap.ContentFormat); cf != 0 {
		t.Fatalf("the subscriber got Content-Format %d, want the relabelled 0", cf)
	}
	if _, _, err := p.verify.Verify(sub.first.Payload, expect("cfg")); !errors.Is(err, signed.ErrWrongContentFormat) {
		t.Fatalf("%v, want ErrWrongContentFormat", err)
	}
	want := expect("cfg")
	want.ContentFormat = 50
	if _, meta, err := p.verify.Verify(sub.first.Payload, want); err != nil || meta.ContentFormat != 50 {
		t.Fatalf("the signed Content-Format: %d, %v; want 50", meta.ContentFormat, err)
	}
}

func TestT1_4ObserveRenumberedOldNotificationIsErrStale(t *testing.T) {
	// §3.4: the proxy gives an old notification a higher Observe number
	// (PR4.2 lets it renumber); the signed counter still orders it.
	p := pubsubSetup(t)
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	if err := p.check(t, sub.first, "temp"); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "21.0"); err != nil {
		t.Fatal(err)
	}
	note, _ := sub.next(t, 5*time.Second)
	if err := p.check(t, note, "temp"); err != nil {
		t.Fatal(err)
	}
	old := renew(sub.first, false)
	old.Type = coap.NonConfirmable
	old.Options = old.Options.SetUint(coap.Observe, 1000)
	old.Token = note.Token
	p.r.send(down, p.subAddr, old)
	replayed, ok := sub.next(t, 5*time.Second)
	if !ok {
		t.Fatal("the renumbered notification did not arrive")
	}
	if err := p.check(t, replayed, "temp"); !errors.Is(err, signed.ErrStale) {
		t.Fatalf("%v, want ErrStale", err)
	}
}

func TestNR5_BrokerDropsDelaysAndReadsMetadataUndetected(t *testing.T) {
	p := pubsubSetup(t)
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	// NR5.3, T4:5.2: topic names and Content-Format are readable.
	if !p.r.saw([]byte("temp")) {
		t.Fatal("topic should be readable")
	}
	// NR5.4, T3:5.1: a dropped publication is simply never seen.
	p.r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == down && m.Options.Has(coap.Observe) {
			return
		}
		fwd(m)
	})
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "21.0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sub.next(t, 200*time.Millisecond); ok {
		t.Fatal("dropped notification arrived")
	}
	// NR5.4, T3:5.2: the publisher gets no answer, which looks like loss.
	p.r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == up {
			fwd(m)
		}
	})
	req := &coap.Message{Code: coap.PUT, Payload: []byte{0}}
	req.Options = req.Options.Insert(coap.URIPath, []byte("temp"))
	if _, err := p.pubEP.Do(timeout(t, 300*time.Millisecond), p.r.addr(), req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want a plain timeout", err)
	}
	// NR5.5, T3:5.3: a delayed publication verifies like a prompt one.
	p.r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == down && m.Options.Has(coap.Observe) {
			time.AfterFunc(300*time.Millisecond, func() { fwd(m) })
			return
		}
		fwd(m)
	})
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "22.0"); err != nil {
		t.Fatal(err)
	}
	for {
		note, ok := sub.next(t, 5*time.Second)
		if !ok {
			t.Fatal("no delayed notification")
		}
		if bytes.Equal(note.Payload, []byte{0}) {
			continue // the unverifiable PUT above, stored by the broker
		}
		if err := p.check(t, note, "temp"); err != nil {
			t.Fatalf("delayed publication: %v", err)
		}
		return
	}
}
