package e2e

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Seed §3.3: the threats to requests (T1:3.1, T1:3.5, T3:3.3) are out of
// the security objectives (NR3.1): requests are not protected. These tests
// make the proxy change and reorder requests, show that the origin acts
// on what it got without being able to tell, and show what a verifying
// client can still tell. And T4:3.3: what a proxy recorded opens once a
// group key leaks.

// pathOf is a request's Uri-Path, "/"-joined.
func pathOf(m *coap.Message) string {
	return strings.Join(coap.URIFromOptions(m.Options, "", "", 0).Path, "/")
}

func TestNR3_1ModifiedRequestPayloadIsActedOnByTheOrigin(t *testing.T) {
	// T1:3.1: a FETCH (RFC 8132, cacheable) whose body names the value;
	// the proxy changes the body.
	s, o, r, c := sigSetup(t)
	r.setHook(r.onPayload(up, func(m *coap.Message) { m.Payload = []byte("alarm") }))
	req := &coap.Message{Code: coap.FETCH, Payload: []byte("temp")}
	req.Options = req.Options.Insert(coap.URIHost, []byte(host)).Insert(coap.URIPath, []byte("query")).SetUint(coap.ContentFormat, 0)
	resp, err := c.Do(timeout(t, 5*time.Second), r.addr(), req)
	if err != nil {
		t.Fatal(err)
	}
	r.mustHaveTampered(t, up, func(b, a *coap.Message) bool {
		return string(b.Payload) == "temp" && string(a.Payload) == "alarm" && b.Options.Equal(a.Options)
	})
	if got := o.requests(); len(got) != 1 || string(got[0].Payload) != "alarm" {
		t.Fatalf("the origin got %v: it should have acted on the changed body", got)
	}
	// The client asked for temp; the representation says alarm.
	if _, _, err := verifierFor(t, s).Verify(resp.Payload, expect("temp")); !errors.Is(err, signed.ErrWrongResource) {
		t.Fatalf("%v, want ErrWrongResource", err)
	}
}

func TestNR3_1ChangedRequestCodeIsActedOnByTheOrigin(t *testing.T) {
	// T1:3.5: the proxy turns a GET into a DELETE. The origin cannot tell
	// and deletes; the client gets a 2.02 with nothing to verify where it
	// asked for a representation, and the resource is gone.
	_, o, r, c := sigSetup(t)
	r.setHook(r.onPayload(up, func(m *coap.Message) { m.Code = coap.DELETE }))
	resp := mustGet(t, c, r, "alarm")
	r.mustHaveTampered(t, up, func(b, a *coap.Message) bool {
		return b.Code == coap.GET && a.Code == coap.DELETE && b.Options.Equal(a.Options)
	})
	if got := o.requests(); len(got) != 1 || got[0].Code != coap.DELETE || pathOf(got[0]) != "alarm" {
		t.Fatalf("the origin got %v, want the DELETE", got)
	}
	if resp.Code != coap.Deleted || len(resp.Payload) != 0 {
		t.Fatalf("the client got %v", resp)
	}
	r.setHook(nil)
	if resp := mustGet(t, c, r, "alarm"); resp.Code != coap.NotFound {
		t.Fatalf("after the changed request: %v, want 4.04", resp.Code)
	}
}

func TestNR3_1ReorderedRequestsAreServedInTheProxysOrder(t *testing.T) {
	// T3:3.3: the proxy holds the first of two requests until it has
	// sent the second. The origin serves them in the proxy's order and
	// cannot tell; each response still verifies for its own request.
	s, o, r, c := sigSetup(t)
	second := make(chan struct{}) // closed when the second request went on
	var mu sync.Mutex
	var held func()    // guarded by mu: forwards the held request
	var heldTok []byte // guarded by mu
	released := false  // guarded by mu
	r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d != up || !isPayloadMsg(m) {
			fwd(m)
			return
		}
		mu.Lock()
		switch {
		case held == nil:
			held, heldTok = func() { fwd(m) }, m.Token
			mu.Unlock()
			return
		case !released && !bytes.Equal(m.Token, heldTok):
			// Another request (not a retransmission of the held one):
			// send it; the test sends the held one once the origin has
			// served this one.
			released = true
			mu.Unlock()
			fwd(m)
			close(second)
			return
		}
		mu.Unlock()
		fwd(m)
	})
	type result struct {
		resp *coap.Message
		err  error
	}
	results := [2]chan result{make(chan result, 1), make(chan result, 1)}
	names := [2]string{"temp", "alarm"}
	get := func(i int) {
		req := &coap.Message{Code: coap.GET}
		req.Options = req.Options.Insert(coap.URIHost, []byte(host)).Insert(coap.URIPath, []byte(names[i]))
		resp, err := c.Do(timeout(t, 5*time.Second), r.addr(), req)
		results[i] <- result{resp, err}
	}
	go get(0)
	testutil.Eventually(t, "the relay to hold a request", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return held != nil
	})
	go get(1)
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not send the second request")
	}
	testutil.Eventually(t, "the origin to serve the second request", func() bool { return o.served() >= 1 })
	mu.Lock()
	release := held
	mu.Unlock()
	release()
	v := verifierFor(t, s)
	for i, ch := range results {
		res := <-ch
		if res.err != nil {
			t.Fatalf("GET %s: %v", names[i], res.err)
		}
		if _, _, err := v.Verify(res.resp.Payload, expect(names[i])); err != nil {
			t.Fatalf("GET %s: %v", names[i], err)
		}
	}
	// The tampering: the client sent temp first, the origin got alarm
	// first.
	var sent, got []string
	for _, m := range r.messages(up) {
		if isPayloadMsg(m) && !slices.Contains(sent, pathOf(m)) {
			sent = append(sent, pathOf(m))
		}
	}
	for _, m := range o.requests() {
		if !slices.Contains(got, pathOf(m)) {
			got = append(got, pathOf(m))
		}
	}
	if !slices.Equal(sent, []string{"temp", "alarm"}) || !slices.Equal(got, []string{"alarm", "temp"}) {
		t.Fatalf("the client sent %v, the origin got %v: want the order swapped", sent, got)
	}
}

func TestT4_3_3RecordedSealedRepresentationsOpenWithALeakedGroupKey(t *testing.T) {
	// R3.7 is not met: a proxy that recorded sealed representations
	// reads their whole history once the group key leaks. This test pins
	// that down.
	s, o, r, c := sigSetup(t)
	gk := signed.GroupKey{ID: []byte("g1"), Alg: signed.AlgAESCCM1664128, Key: secret(7)}
	o.mu.Lock()
	o.group = &gk
	o.mu.Unlock()
	history := []string{"door-code-4711", "door-code-0815"}
	for _, code := range history {
		o.set("secret", 0, code)
		mustGet(t, c, r, "secret")
		if r.saw([]byte(code)) {
			t.Fatalf("the proxy read %q while the group key was secret", code)
		}
	}
	leaked := verifierFor(t, s)
	if err := leaked.AddGroupKey(gk); err != nil {
		t.Fatal(err)
	}
	var opened []string
	for _, m := range r.messages(down) {
		if cf, _ := m.Options.Uint(coap.ContentFormat); cf != uint32(signed.ContentFormatCOSEEncrypt0) {
			continue
		}
		want := expect("secret")
		want.RequireEncrypted = true
		p, _, err := leaked.Verify(m.Payload, want)
		if err != nil {
			t.Fatalf("a recorded representation did not open with the leaked key: %v", err)
		}
		opened = append(opened, string(p))
	}
	if !slices.Equal(opened, history) {
		t.Fatalf("opened %q, want the history %q", opened, history)
	}
}
