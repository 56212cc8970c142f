package e2e

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Seed §3.5 threats the broker poses beyond those of
// signed_threats_test.go: header changes, floods, reordering, reading and
// recording, and what the non-requirements NR5.1 to NR5.3 leave open.

// publishRep PUTs rep, of Content-Format cf, on topic name.
func publishRep(t *testing.T, e *coap.Endpoint, dst netip.AddrPort, name string, cf uint16, rep []byte) {
	t.Helper()
	req := &coap.Message{Code: coap.PUT, Payload: rep}
	req.Options = req.Options.Insert(coap.URIPath, []byte(name)).SetUint(coap.ContentFormat, uint32(cf))
	resp, err := e.Do(timeout(t, 2*time.Second), dst, req)
	if err != nil || resp.Code != coap.Changed {
		t.Fatalf("publish: %v %v", resp, err)
	}
}

// readTopic GETs the latest publication of topic name (no Observe).
func readTopic(t *testing.T, e *coap.Endpoint, dst netip.AddrPort, name string) *coap.Message {
	t.Helper()
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIPath, []byte(name))
	resp, err := e.Do(timeout(t, 5*time.Second), dst, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestT1_5_3ChangedResponseCodeIsNoticedByAVerifyingSubscriber(t *testing.T) {
	// The broker turns the 2.05 carrying the latest publication into a
	// 5.03. The payload still verifies as the current publication, which
	// only a 2.05 carries: the subscriber sees the code was changed. A
	// broker that also drops the payload is a denial of service (NR5.3).
	p := pubsubSetup(t)
	p.r.setHook(p.r.onPayload(down, func(m *coap.Message) { m.Code = coap.ServiceUnavailable }))
	resp := readTopic(t, p.subEP, p.r.addr(), "temp")
	p.r.mustHaveTampered(t, down, func(b, a *coap.Message) bool {
		return b.Code == coap.Content && a.Code == coap.ServiceUnavailable && bytes.Equal(a.Payload, b.Payload)
	})
	if resp.Code != coap.ServiceUnavailable {
		t.Fatalf("the subscriber got %v, want the changed 5.03", resp.Code)
	}
	if err := p.check(t, resp, "temp"); err != nil {
		t.Fatalf("the payload of the changed response: %v", err)
	}
}

func TestT2_5_2FloodOfNotificationsIsRejectedBySubscriber(t *testing.T) {
	// The broker sends the subscriber twenty notifications the publisher
	// never made: copies of the publication it already has and forged
	// ones, with fresh Observe numbers. Each fails verification.
	p := pubsubSetup(t)
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	if err := p.check(t, sub.first, "temp"); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(sub.first.Payload)
	forged[len(forged)-1] ^= 1
	const flood = 20
	for i := range flood {
		n := renew(sub.first, false)
		n.Type, n.Token = coap.NonConfirmable, sub.first.Token
		n.Options = n.Options.SetUint(coap.Observe, uint32(100+i))
		if i%2 == 1 {
			n.Payload = forged
		}
		p.r.send(down, p.subAddr, n)
	}
	for i := range flood {
		note, ok := sub.next(t, 5*time.Second)
		if !ok {
			t.Fatalf("%d of %d flooded notifications arrived", i, flood)
		}
		err := p.check(t, note, "temp")
		if !errors.Is(err, signed.ErrStale) && !errors.Is(err, signed.ErrBadSignature) {
			t.Fatalf("flooded notification %d: %v, want ErrStale or ErrBadSignature", i, err)
		}
	}
}

func TestT3_5_4ReorderedPublicationsAreErrStale(t *testing.T) {
	// Two publications; the broker holds the notification of the first
	// until it has sent the second. The subscriber accepts the newer one
	// and refuses the older one that comes after it.
	p := pubsubSetup(t)
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	if err := p.check(t, sub.first, "temp"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held func() // guarded by mu
	p.r.setHook(func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d != down || !m.Options.Has(coap.Observe) {
			fwd(m)
			return
		}
		mu.Lock()
		if held == nil {
			held = func() { fwd(m) }
			mu.Unlock()
			return
		}
		h := held
		held = func() {}
		mu.Unlock()
		fwd(m)
		h()
	})
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "21.0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the relay to hold a notification", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return held != nil
	})
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "22.0"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 2 {
		note, ok := sub.next(t, 5*time.Second)
		if !ok {
			t.Fatalf("notification %d did not arrive", i+1)
		}
		payload, _, err := p.verify.Verify(note.Payload, expect("temp"))
		switch {
		case i == 0 && err != nil:
			t.Fatalf("the newer publication: %v", err)
		case i == 0:
			got = append(got, string(payload))
		case !errors.Is(err, signed.ErrStale):
			t.Fatalf("the older publication after the newer: %v, want ErrStale", err)
		}
	}
	// The tampering: the broker sent 21.0 first, the subscriber got 22.0
	// first.
	if !slices.Equal(got, []string{"22.0"}) {
		t.Fatalf("the subscriber accepted %q, want the newer publication first", got)
	}
}

func TestT4_5_1SealedPublicationIsNotReadableByTheBroker(t *testing.T) {
	p := pubsubSetup(t)
	gk := signed.GroupKey{ID: []byte("g1"), Alg: signed.AlgAESCCM1664128, Key: secret(8)}
	seal := func(value string) []byte {
		rep, err := p.pub.Seal(resourceURI("door"), 0, []byte(value), gk)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	publishRep(t, p.pubEP, p.r.addr(), "door", signed.ContentFormatCOSEEncrypt0, seal("code-4711"))
	sub := subscribe(t, p.subEP, p.r.addr(), "door")
	publishRep(t, p.pubEP, p.r.addr(), "door", signed.ContentFormatCOSEEncrypt0, seal("code-0815"))
	note, ok := sub.next(t, 5*time.Second)
	if !ok {
		t.Fatal("no notification")
	}
	for _, leak := range []string{"code-4711", "code-0815", resourceURI("door")} {
		if p.r.saw([]byte(leak)) {
			t.Errorf("the broker read %q of a sealed publication", leak)
		}
	}
	if err := p.verify.AddGroupKey(gk); err != nil {
		t.Fatal(err)
	}
	want := expect("door")
	want.RequireEncrypted = true
	for i, m := range []*coap.Message{sub.first, note} {
		if v, _, err := p.verify.Verify(m.Payload, want); err != nil || string(v) != []string{"code-4711", "code-0815"}[i] {
			t.Fatalf("subscriber, publication %d: %q, %v", i+1, v, err)
		}
	}
}

func TestT4_5_3RecordedSealedPublicationsOpenWithALeakedGroupKey(t *testing.T) {
	// R5.7 is not met: a broker that kept every sealed publication reads
	// the topic's whole history once the group key leaks.
	p := pubsubSetup(t)
	gk := signed.GroupKey{ID: []byte("g1"), Alg: signed.AlgAESCCM1664128, Key: secret(8)}
	history := []string{"open", "closed", "open"}
	for _, v := range history {
		rep, err := p.pub.Seal(resourceURI("door"), 0, []byte(v), gk)
		if err != nil {
			t.Fatal(err)
		}
		publishRep(t, p.pubEP, p.r.addr(), "door", signed.ContentFormatCOSEEncrypt0, rep)
	}
	leaked := verifierFor(t, p.pub)
	if err := leaked.AddGroupKey(gk); err != nil {
		t.Fatal(err)
	}
	var opened []string
	for _, m := range p.r.messages(up) {
		if cf, _ := m.Options.Uint(coap.ContentFormat); m.Code != coap.PUT || cf != uint32(signed.ContentFormatCOSEEncrypt0) {
			continue
		}
		want := expect("door")
		want.RequireEncrypted = true
		v, _, err := leaked.Verify(m.Payload, want)
		if err != nil {
			t.Fatalf("a recorded publication did not open with the leaked key: %v", err)
		}
		opened = append(opened, string(v))
	}
	if !slices.Equal(opened, history) {
		t.Fatalf("opened %q, want the history %q", opened, history)
	}
}

func TestNR5_1SubscriptionRequestIsNotProtected(t *testing.T) {
	// The broker subscribes the subscriber to another topic than the one
	// it asked for; nothing in the request stops it. The subscriber sees
	// that the publications are of another resource.
	p := pubsubSetup(t)
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "alarm", 0, "on"); err != nil {
		t.Fatal(err)
	}
	p.r.setHook(p.r.onPayload(up, func(m *coap.Message) {
		m.Options = m.Options.Remove(coap.URIPath).Insert(coap.URIPath, []byte("alarm"))
	}))
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	p.r.mustHaveTampered(t, up, func(b, a *coap.Message) bool {
		return b.Code == coap.GET && pathOf(b) == "temp" && pathOf(a) == "alarm"
	})
	if err := p.check(t, sub.first, "temp"); !errors.Is(err, signed.ErrWrongResource) {
		t.Fatalf("%v, want ErrWrongResource", err)
	}
}

func TestNR5_2NotificationOptionsAreNotProtected(t *testing.T) {
	// The broker changes a notification's Max-Age and ETag (NR5.2, and
	// the metadata of NR5.3): the signature does not cover them, so the
	// subscriber cannot tell.
	p := pubsubSetup(t)
	sub := subscribe(t, p.subEP, p.r.addr(), "temp")
	p.r.setHook(p.r.onNote(func(m *coap.Message) {
		m.Options = m.Options.SetUint(coap.MaxAge, 86400).Set(coap.ETag, []byte("forged"))
	}))
	if err := publish(t, p.pubEP, p.r.addr(), p.pub, "temp", 0, "21.0"); err != nil {
		t.Fatal(err)
	}
	note, ok := sub.next(t, 5*time.Second)
	if !ok {
		t.Fatal("no notification")
	}
	p.r.mustHaveTampered(t, down, func(b, a *coap.Message) bool {
		ma, _ := a.Options.Uint(coap.MaxAge)
		etag, _ := a.Options.Get(coap.ETag)
		return ma == 86400 && string(etag) == "forged" && bytes.Equal(a.Payload, b.Payload)
	})
	ma, _ := note.Options.Uint(coap.MaxAge)
	etag, _ := note.Options.Get(coap.ETag)
	if err := p.check(t, note, "temp"); err != nil || ma != 86400 || string(etag) != "forged" {
		t.Fatalf("changed options go unnoticed by the signature: %v, Max-Age %d, ETag %q", err, ma, etag)
	}
}
