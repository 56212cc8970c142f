package cache

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

const target = "coap://[fd00::1]/temp"

func TestPR3_1FreshHitIsAnsweredWithoutContactingServer(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("22.5", 0, "e1", 30)))
	first := f.do(t, get(target))
	second := f.do(t, get(target))
	if n := f.o.count(); n != 1 {
		t.Fatalf("origin called %d times, want 1", n)
	}
	sameExceptMaxAge(t, first, second)
	if s := f.c.Stats(); s.Hits != 1 || s.Misses != 1 || s.Entries != 1 || s.Bytes <= 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPR3_2NewCacheableResponseReplacesEntry(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, _ *coap.Message) *coap.Message {
		return content(string(rune('a'+n-1)), 0, "", 10)
	})
	f.do(t, get(target))
	f.clk.Advance(11 * time.Second)
	if got := f.do(t, get(target)); string(got.Payload) != "b" {
		t.Fatalf("after expiry got %q, want the new response", got.Payload)
	}
	if got := f.do(t, get(target)); string(got.Payload) != "b" || f.o.count() != 2 {
		t.Fatalf("got %q after %d origin calls, want the replacement served from the cache", got.Payload, f.o.count())
	}
	if s := f.c.Stats(); s.Entries != 1 {
		t.Fatalf("entries = %d, want the old one replaced", s.Entries)
	}
}

func TestPR3_3MatchingETagGetsValidWithoutPayload(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("22.5", 0, "e1", 30)))
	f.do(t, get(target))
	f.clk.Advance(5 * time.Second)
	resp := f.do(t, get(target, opt(coap.ETag, "zz"), opt(coap.ETag, "e1")))
	if resp.Code != coap.Valid || len(resp.Payload) != 0 {
		t.Fatalf("got %v with %d bytes, want 2.03 without payload", resp.Code, len(resp.Payload))
	}
	if tag, _ := resp.Options.Get(coap.ETag); string(tag) != "e1" || maxAgeOf(t, resp) != 25 {
		t.Fatalf("2.03 options %v, want ETag e1 and Max-Age 25", resp.Options)
	}
	if f.o.count() != 1 {
		t.Fatal("a matching ETag must not reach the server")
	}
}

func TestPR3_3OtherETagIsForwarded(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, req *coap.Message) *coap.Message {
		if n == 2 {
			v := &coap.Message{Code: coap.Valid}
			v.Options = v.Options.Insert(coap.ETag, []byte("old")).SetUint(coap.MaxAge, 30)
			return v
		}
		return content("22.5", 0, "e1", 30)
	})
	f.do(t, get(target))
	resp := f.do(t, get(target, opt(coap.ETag, "old")))
	if f.o.count() != 2 {
		t.Fatal("an ETag that is not the fresh one must be forwarded")
	}
	if tag, _ := f.o.last(t).Options.Get(coap.ETag); string(tag) != "old" {
		t.Fatalf("origin got ETag %q, want the client's", tag)
	}
	if resp.Code != coap.Valid {
		t.Fatalf("got %v, want the server's 2.03 for the client's own ETag", resp.Code)
	}
}

func TestPR3_4MaxAgeIsRemainingTimeRoundedDown(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	f.do(t, get(target))
	for _, tc := range []struct {
		advance time.Duration
		want    uint32
	}{
		{500 * time.Millisecond, 29},
		{9*time.Second + 400*time.Millisecond, 20}, // 9.9 s in the cache
		{100 * time.Millisecond, 20},               // exactly 10 s
		{19*time.Second + 999*time.Millisecond, 0}, // 29.999 s: fresh, 0 left
	} {
		f.clk.Advance(tc.advance)
		if got := maxAgeOf(t, f.do(t, get(target))); got != tc.want {
			t.Fatalf("after +%v: Max-Age %d, want %d", tc.advance, got, tc.want)
		}
	}
	if f.o.count() != 1 {
		t.Fatalf("origin called %d times", f.o.count())
	}
}

func TestPR3_4MaxAgeAddedWhenServerOmittedIt(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("x", 0, "", -1)))
	f.do(t, get(target))
	f.clk.Advance(15 * time.Second)
	if got := maxAgeOf(t, f.do(t, get(target))); got != 45 {
		t.Fatalf("Max-Age %d, want 60-15 (§5.10.5 default)", got)
	}
}

func TestPR3_5AcceptMatchingCachedContentFormatIsServed(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("{}", 50, "", 30)))
	f.do(t, get(target))
	resp := f.do(t, get(target, uintOpt(coap.Accept, 50)))
	if f.o.count() != 1 || string(resp.Payload) != "{}" {
		t.Fatalf("Accept 50 for a stored application/json: origin called %d times", f.o.count())
	}
	f.do(t, get(target, uintOpt(coap.Accept, 60)))
	if f.o.count() != 2 {
		t.Fatal("Accept for another Content-Format must be forwarded")
	}
}

func TestPR3_5AcceptIsPartOfTheKeyOtherwise(t *testing.T) {
	f := newFixture(t, Defaults(), func(_ int, req *coap.Message) *coap.Message {
		if a, ok := req.Options.Uint(coap.Accept); ok {
			return content("cbor", a, "", 30)
		}
		return content("text", 0, "", 30)
	})
	f.do(t, get(target, uintOpt(coap.Accept, 60)))
	if resp := f.do(t, get(target)); string(resp.Payload) != "text" {
		t.Fatal("a request without Accept must not get a representation chosen for an Accept")
	}
	if resp := f.do(t, get(target, uintOpt(coap.Accept, 60))); string(resp.Payload) != "cbor" || f.o.count() != 2 {
		t.Fatalf("Accept 60 again: %q after %d calls", resp.Payload, f.o.count())
	}
}

func TestRFC7252_5_6_2StaleEntryIsValidatedWithStoredETag(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, req *coap.Message) *coap.Message {
		if n == 1 {
			m := content("22.5", 0, "e1", 10)
			m.Options = m.Options.Insert(65000, []byte("old")) // safe, elective
			return m
		}
		v := &coap.Message{Code: coap.Valid}
		v.Options = v.Options.Insert(coap.ETag, []byte("e1")).SetUint(coap.MaxAge, 40).Insert(65000, []byte("new"))
		return v
	})
	first := f.do(t, get(target))
	f.clk.Advance(11 * time.Second)
	resp := f.do(t, get(target))
	if tag, _ := f.o.last(t).Options.Get(coap.ETag); string(tag) != "e1" {
		t.Fatal("the stale entry's ETag must be added to the forwarded request")
	}
	if resp.Code != coap.Content || string(resp.Payload) != string(first.Payload) {
		t.Fatalf("got %v %q, want the stored 2.05 for a client without ETag", resp.Code, resp.Payload)
	}
	if maxAgeOf(t, resp) != 40 {
		t.Fatalf("Max-Age %d, want the 2.03's 40", maxAgeOf(t, resp))
	}
	if v, _ := resp.Options.Get(65000); string(v) != "new" {
		t.Fatal("§5.9.1.3: safe options of the 2.03 replace the stored ones")
	}
	f.clk.Advance(39 * time.Second)
	f.do(t, get(target))
	if f.o.count() != 2 {
		t.Fatal("the refreshed entry must be fresh for the new Max-Age")
	}
	if s := f.c.Stats(); s.Revalidations != 1 {
		t.Fatalf("revalidations = %d", s.Revalidations)
	}
}

func TestRFC7252_5_6_2ClientETagMatchingRevalidatedEntryGetsValid(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, req *coap.Message) *coap.Message {
		if n == 1 {
			return content("22.5", 0, "e1", 10)
		}
		v := &coap.Message{Code: coap.Valid}
		v.Options = v.Options.Insert(coap.ETag, []byte("e1")).SetUint(coap.MaxAge, 40)
		return v
	})
	f.do(t, get(target))
	f.clk.Advance(20 * time.Second)
	resp := f.do(t, get(target, opt(coap.ETag, "e1")))
	if resp.Code != coap.Valid || maxAgeOf(t, resp) != 40 {
		t.Fatalf("got %v %v, want 2.03 with the new Max-Age", resp.Code, resp.Options)
	}
}

func TestRFC7252_5_6_2ValidationOfVanishedEntryAsksAgain(t *testing.T) {
	var f *fixture
	f = newFixture(t, Defaults(), func(n int, req *coap.Message) *coap.Message {
		if req.Options.Has(coap.ETag) {
			// The entry disappears while the validation is in flight.
			f.c.mu.Lock()
			for _, e := range f.c.entries {
				f.c.remove(e)
			}
			f.c.mu.Unlock()
			v := &coap.Message{Code: coap.Valid}
			v.Options = v.Options.Insert(coap.ETag, []byte("e1"))
			return v
		}
		return content("22.5", 0, "e1", 10)
	})
	f.do(t, get(target))
	f.clk.Advance(11 * time.Second)
	resp := f.do(t, get(target))
	if resp.Code != coap.Content || f.o.count() != 3 {
		t.Fatalf("got %v after %d calls, want a full 2.05 fetched again", resp.Code, f.o.count())
	}
}

func TestRFC7252_5_6CacheableResponseCodes(t *testing.T) {
	withAge := func(code coap.Code, age int) *coap.Message {
		m := &coap.Message{Code: code, Payload: []byte("d")}
		if age >= 0 {
			m.Options = m.Options.SetUint(coap.MaxAge, uint32(age))
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		resp   *coap.Message
		stored bool
	}{
		{"2.05", content("x", 0, "", -1), true},
		{"2.05 Max-Age 0", content("x", 0, "", 0), false},
		{"2.01", withAge(coap.Created, 30), false},
		{"2.04", withAge(coap.Changed, 30), false},
		{"2.07 unknown success", withAge(coap.NewCode(2, 7), 30), false},
		{"2.03", withAge(coap.Valid, 30), false},
		{"4.04 with Max-Age", withAge(coap.NotFound, 30), true},
		{"4.04 without Max-Age", withAge(coap.NotFound, -1), false},
		{"5.03 with Max-Age", withAge(coap.ServiceUnavailable, 5), true},
		{"4.29 unknown to RFC 7252 with Max-Age", withAge(coap.TooManyRequests, 5), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Defaults(), always(tc.resp))
			f.do(t, get(target))
			got := f.do(t, get(target))
			if stored := f.o.count() == 1; stored != tc.stored {
				t.Fatalf("stored = %v, want %v", stored, tc.stored)
			}
			if tc.stored {
				sameExceptMaxAge(t, tc.resp, got)
			}
		})
	}
}

func TestRFC7252_6_4EquivalentRequestURIsShareAnEntry(t *testing.T) {
	schemeForm := func(host string, port int, path ...string) *coap.Request {
		m := &coap.Message{Code: coap.GET}
		m.Options = m.Options.Insert(coap.ProxyScheme, []byte("coap")).Insert(coap.URIHost, []byte(host))
		if port >= 0 {
			m.Options = m.Options.SetUint(coap.URIPort, uint32(port))
		}
		for _, p := range path {
			m.Options = m.Options.Insert(coap.URIPath, []byte(p))
		}
		return &coap.Request{Msg: m}
	}
	base := get("coap://Node1.example:5683/a%2Fb/c?x=1")
	f := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	f.do(t, base)
	same := map[string]*coap.Request{
		"default port elided": get("coap://node1.example/a%2fb/c?x=1"),
		"host case":           get("coap://NODE1.EXAMPLE/a%2Fb/c?x=1"),
		"scheme case":         get("COAP://node1.example/a%2Fb/c?x=1"),
		"percent-encoding":    get("coap://node1.example/%61%2Fb/c?%78=1"),
		"Proxy-Scheme form": func() *coap.Request {
			r := schemeForm("node1.example", 5683, "a/b", "c")
			r.Msg.Options = r.Msg.Options.Insert(coap.URIQuery, []byte("x=1"))
			return r
		}(),
	}
	for name, r := range same {
		f.do(t, r)
		if f.o.count() != 1 {
			t.Fatalf("%s: a different key", name)
		}
	}
	f2 := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	f2.do(t, get("coap://[FD00:0::1]:5683/t"))
	f2.do(t, schemeForm("fd00::1", -1, "t"))
	f2.do(t, schemeForm("[fd00:0:0::1]", 5683, "t"))
	if f2.o.count() != 1 {
		t.Fatal("IPv6 literals in different text forms must share a key")
	}
	for name, r := range map[string]*coap.Request{
		"other port":  get("coap://node1.example:5684/a%2Fb/c?x=1"),
		"split path":  get("coap://node1.example/a/b/c?x=1"),
		"other query": get("coap://node1.example/a%2Fb/c?x=2"),
		"coaps":       get("coaps://node1.example:5683/a%2Fb/c?x=1"),
	} {
		before := f.o.count()
		f.do(t, r)
		if f.o.count() != before+1 {
			t.Fatalf("%s: must be a different key", name)
		}
	}
}

func TestRFC7252_5_7_3ReverseRouteIsKeyedApartFromForwardForm(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	rev := &coap.Message{Code: coap.GET}
	rev.Options = rev.Options.Insert(coap.URIPath, []byte("node1")).Insert(coap.URIPath, []byte("temp"))
	f.do(t, &coap.Request{Msg: rev})
	f.do(t, &coap.Request{Msg: rev.Clone()})
	if f.o.count() != 1 {
		t.Fatal("a reverse-routed request must be cached by its Uri-* options")
	}
	m := &coap.Message{Code: coap.GET}
	m.Options = m.Options.Insert(coap.ProxyScheme, []byte("coap")).Insert(coap.URIHost, []byte("node1")).Insert(coap.URIPath, []byte("temp"))
	f.do(t, &coap.Request{Msg: m})
	if f.o.count() != 2 {
		t.Fatal("the reverse form must not share a key with a forward request")
	}
}

func TestRFC7252_11_2CoapsResponseIsNotServedToCoap(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("secret", 0, "", 30)))
	r := get(target)
	r.Secure = true
	f.do(t, r)
	f.do(t, get(target))
	if f.o.count() != 2 {
		t.Fatal("a response obtained for a coaps client was served to a coap client")
	}
	r2 := get(target)
	r2.Secure = true
	f.do(t, r2)
	if f.o.count() != 2 {
		t.Fatal("coaps clients share their entry")
	}
}

func TestRFC8132_2FetchPayloadIsPartOfTheKey(t *testing.T) {
	f := newFixture(t, Defaults(), func(_ int, req *coap.Message) *coap.Message {
		return content("for "+string(req.Payload), 0, "", 30)
	})
	fetch := func(body string) *coap.Request {
		r := get(target, uintOpt(coap.ContentFormat, 60))
		r.Msg.Code = coap.FETCH
		r.Msg.Payload = []byte(body)
		return r
	}
	f.do(t, fetch("a"))
	if got := f.do(t, fetch("b")); string(got.Payload) != "for b" {
		t.Fatalf("FETCH b got %q", got.Payload)
	}
	if got := f.do(t, fetch("a")); string(got.Payload) != "for a" || f.o.count() != 2 {
		t.Fatalf("FETCH a again: %q after %d calls", got.Payload, f.o.count())
	}
	f.do(t, get(target, uintOpt(coap.ContentFormat, 60)))
	if f.o.count() != 3 {
		t.Fatal("the method is part of the key")
	}
}

func TestRFC7641_2ObserveIsNotPartOfTheKey(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, req *coap.Message) *coap.Message {
		m := content("n", 0, "", 30)
		if req.Options.Has(coap.Observe) {
			m.Options = m.Options.SetUint(coap.Observe, 12)
		}
		return m
	})
	reg := f.do(t, get(target, uintOpt(coap.Observe, 0)))
	f.do(t, get(target, uintOpt(coap.Observe, 0)))
	if f.o.count() != 2 {
		t.Fatal("a registration must reach the server")
	}
	got := f.do(t, get(target))
	if f.o.count() != 2 {
		t.Fatal("a GET must be answered from the stored notification")
	}
	// The notification answers a plain GET byte for byte, without its
	// Observe option: that client is not an observer (RFC 7641 §3.2).
	if got.Options.Has(coap.Observe) {
		t.Fatal("a plain GET was answered with an Observe option")
	}
	sameExceptMaxAge(t, withoutObserve(reg), got)
}

func withoutObserve(m *coap.Message) *coap.Message {
	c := m.Clone()
	c.Options = c.Options.Remove(coap.Observe)
	return c
}

func TestRFC8613_10OSCORERequestBypassesTheCache(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("ciphertext", 0, "", 30)))
	mk := func() *coap.Request {
		r := get(target, opt(coap.OSCORE, "\x09\x01"))
		r.Msg.Code = coap.FETCH
		r.Msg.Payload = []byte{0xde, 0xad}
		return r
	}
	sent := mk()
	f.do(t, sent)
	f.do(t, mk())
	if f.o.count() != 2 {
		t.Fatal("OSCORE responses must not be cached")
	}
	// Against a fresh copy: sent itself went through the stage, and a
	// change made in place would show on both sides.
	want := mk().Msg
	if in := f.o.last(t); !in.Options.Equal(want.Options) || !bytes.Equal(in.Payload, want.Payload) {
		t.Fatal("a protected request was changed")
	}
	if s := f.c.Stats(); s.Entries != 0 || s.Misses != 0 {
		t.Fatalf("stats %+v: the cache must not even look", s)
	}
}

func TestCacheableOSCOREDeterministicRequestIsCachedByOuterKey(t *testing.T) {
	protected := &coap.Message{Code: coap.Content, Payload: []byte{0x8a, 0x00, 0xff, 0x13}}
	protected.Options = protected.Options.Insert(coap.OSCORE, []byte{0x01, 0x07}).SetUint(coap.MaxAge, 60)
	f := newFixture(t, Defaults(), always(protected))
	det := func(hash string) *coap.Request {
		r := get(target, opt(coap.OSCORE, "\x19\x00\x05"), opt(coap.RequestHash, hash))
		r.Msg.Code = coap.FETCH
		r.Msg.Payload = []byte("deterministic ciphertext")
		return r
	}
	f.do(t, det("h1"))
	f.clk.Advance(3 * time.Second)
	got := f.do(t, det("h1"))
	if f.o.count() != 1 {
		t.Fatal("a deterministic request must be answered from the cache")
	}
	sameExceptMaxAge(t, protected, got)
	if maxAgeOf(t, got) != 57 {
		t.Fatal("outer Max-Age must be the remaining freshness")
	}
	f.do(t, det("h2"))
	if f.o.count() != 2 {
		t.Fatal("Request-Hash is part of the key")
	}
}

func TestCOSERepresentationIsServedByteIdentical(t *testing.T) {
	for _, cf := range []uint32{16, 18, 96, 98} {
		payload := string([]byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xff, 0x00, byte(cf)})
		resp := content(payload, cf, "s1", 30)
		resp.Options = resp.Options.Insert(65000, []byte{0})
		f := newFixture(t, Defaults(), always(resp))
		f.do(t, get(target))
		sameExceptMaxAge(t, resp, f.do(t, get(target)))
		if f.o.count() != 1 {
			t.Fatalf("content format %d not cached", cf)
		}
	}
}

func TestUnsafeRequestSuccessInvalidatesEveryVariantOfTheURI(t *testing.T) {
	changed := coap.Changed
	f := newFixture(t, Defaults(), func(_ int, req *coap.Message) *coap.Message {
		if req.Code == coap.POST {
			return &coap.Message{Code: changed}
		}
		return content("x", 0, "", 30)
	})
	other := get("coap://[fd00::1]/other")
	warm := func() {
		f.do(t, get(target))
		f.do(t, get(target, uintOpt(coap.Accept, 60)))
		f.do(t, other)
	}
	warm()
	post := get(target)
	post.Msg.Code = coap.POST
	f.do(t, post)
	if s := f.c.Stats(); s.Entries != 1 || s.Invalidated != 2 {
		t.Fatalf("stats %+v, want both variants of %s dropped, the other URI kept", s, target)
	}
	n := f.o.count()
	f.do(t, get(target))
	if f.o.count() != n+1 {
		t.Fatal("GET after a successful POST must go to the server")
	}
	changed = coap.BadRequest
	warm()
	f.do(t, post)
	if s := f.c.Stats(); s.Entries != 3 {
		t.Fatalf("a failed POST dropped entries: %+v", s)
	}
}

func TestRFC8768_3Stored508OnlyForSmallerOrEqualHopLimit(t *testing.T) {
	hl := func(v byte) coap.Option { return coap.Option{ID: coap.HopLimit, Value: []byte{v}} }
	m := &coap.Message{Code: coap.HopLimitReached, Payload: []byte("gw-b")}
	m.Options = m.Options.SetUint(coap.MaxAge, 30)
	f := newFixture(t, Defaults(), always(m))
	f.do(t, get(target, hl(5)))
	f.do(t, get(target, hl(4)))
	if f.o.count() != 1 {
		t.Fatal("a smaller Hop-Limit must get the stored 5.08")
	}
	f.do(t, get(target, hl(6)))
	if f.o.count() != 2 {
		t.Fatal("a larger Hop-Limit may reach further: forwarded")
	}
	g := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	g.do(t, get(target, hl(5)))
	g.do(t, get(target, hl(15)))
	if g.o.count() != 1 {
		t.Fatal("Hop-Limit must not split the entry of an ordinary response")
	}
}

func TestNoCacheKeyOptionsDoNotSplitEntries(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("x", 0, "", 30)))
	f.do(t, get(target, uintOpt(coap.Size1, 10)))
	f.do(t, get(target, uintOpt(coap.Size2, 0), opt(coap.Echo, "abc")))
	if f.o.count() != 1 {
		t.Fatal("NoCacheKey options (§5.4.6) must not be part of the key")
	}
	f.do(t, get(target, opt(65000, "v"))) // elective, safe, a cache key
	if f.o.count() != 2 {
		t.Fatal("a cache-key option must be part of the key")
	}
}

func TestExpiredEntryWithoutETagIsDroppedWhenFound(t *testing.T) {
	f := newFixture(t, Defaults(), func(n int, _ *coap.Message) *coap.Message {
		if n == 1 {
			return content("x", 0, "", 5)
		}
		return &coap.Message{Code: coap.Changed} // not cacheable for a GET
	})
	f.do(t, get(target))
	f.clk.Advance(6 * time.Second)
	f.do(t, get(target))
	if s := f.c.Stats(); s.Entries != 0 || s.Bytes != 0 || s.Expired != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBoundedLRUEvictionAndEntryCap(t *testing.T) {
	one := entrySize(content("0123456789", 0, "", 30))
	cfg := Config{MaxBytes: 3 * one, MaxEntryBytes: one, DefaultMaxAge: time.Minute}
	f := newFixture(t, cfg, func(_ int, req *coap.Message) *coap.Message {
		u := coap.URIFromOptions(req.Options, "", "", 0)
		if len(u.Path) > 0 && u.Path[0] == "big" {
			return content("0123456789X", 0, "", 30)
		}
		return content("0123456789", 0, "", 30)
	})
	uri := func(p string) *coap.Request {
		m := &coap.Message{Code: coap.GET}
		m.Options = m.Options.Insert(coap.URIPath, []byte(p))
		return &coap.Request{Msg: m}
	}
	f.do(t, uri("a"))
	f.do(t, uri("b"))
	f.do(t, uri("c"))
	f.do(t, uri("a")) // a is now the most recent
	f.do(t, uri("d")) // evicts b
	if s := f.c.Stats(); s.Evictions != 1 || s.Entries != 3 || s.Bytes > cfg.MaxBytes {
		t.Fatalf("stats %+v", s)
	}
	n := f.o.count()
	f.do(t, uri("a"))
	if f.o.count() != n {
		t.Fatal("the recently used entry was evicted")
	}
	f.do(t, uri("b"))
	if f.o.count() != n+1 {
		t.Fatal("the least recently used entry was kept")
	}
	big := f.do(t, uri("big"))
	f.do(t, uri("big"))
	if string(big.Payload) != "0123456789X" || f.o.count() != n+3 {
		t.Fatal("an entry over max_entry_bytes must pass through unstored")
	}
}

func TestIdenticalConcurrentMissesAreCoalesced(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(always(content("x", 0, "", 30)))
	blocking := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		<-release
		return o.ServeCoAP(ctx, w, r)
	})
	c := New(Defaults())
	stage := c.Stage(blocking)
	const n = 8
	var wg sync.WaitGroup
	writers := make([]*coaptest.Recorder, n)
	for i := range writers {
		writers[i] = coaptest.NewRecorder(nil)
		wg.Add(1)
		go func(w *coaptest.Recorder) {
			defer wg.Done()
			if err := stage.ServeCoAP(context.Background(), w, get(target)); err != nil {
				t.Error(err)
			}
		}(writers[i])
	}
	// Wait, without sleeping, until one leader and n-1 waiters are in.
	for {
		c.mu.Lock()
		f := c.flights[flightKey{mustKey(t, get(target)).ID, hopLimit(get(target).Msg)}]
		joined := f != nil && f.waiters == n-1
		c.mu.Unlock()
		if joined {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if o.count() != 1 {
		t.Fatalf("origin called %d times, want 1", o.count())
	}
	for i, w := range writers {
		if m := w.Msg(); m == nil || string(m.Payload) != "x" {
			t.Fatalf("waiter %d got %v", i, m)
		}
	}
	if s := c.Stats(); s.Coalesced != n-1 {
		t.Fatalf("coalesced = %d", s.Coalesced)
	}
}

func TestCoalescedWaitersShareTheLeadersError(t *testing.T) {
	release := make(chan struct{})
	var calls sync.WaitGroup
	c := New(Defaults())
	stage := c.Stage(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		<-release
		return coap.Errorf(coap.GatewayTimeout, "")
	}))
	errs := make(chan error, 2)
	for range 2 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			errs <- stage.ServeCoAP(context.Background(), coaptest.NewRecorder(nil), get(target))
		}()
	}
	for {
		c.mu.Lock()
		f := c.flights[flightKey{mustKey(t, get(target)).ID, hopLimit(get(target).Msg)}]
		joined := f != nil && f.waiters == 1
		c.mu.Unlock()
		if joined {
			break
		}
		runtime.Gosched()
	}
	close(release)
	calls.Wait()
	close(errs)
	for err := range errs {
		var ce *coap.Error
		if !errorsAs(err, &ce) || ce.Code != coap.GatewayTimeout {
			t.Fatalf("got %v, want the 5.04", err)
		}
	}
}

func mustKey(t testing.TB, r *coap.Request) Key {
	t.Helper()
	k, ok := KeyOf(r)
	if !ok {
		t.Fatal("no key")
	}
	return k
}

func TestKeyOfAndStoreForTheObserveHub(t *testing.T) {
	f := newFixture(t, Defaults(), always(content("origin", 0, "", 30)))
	k := mustKey(t, get(target))
	note := content("pushed", 0, "", 20)
	note.Options = note.Options.SetUint(coap.Observe, 9)
	if !f.c.Store(k, note) {
		t.Fatal("a notification must be storable")
	}
	got := f.do(t, get(target))
	if f.o.count() != 0 || string(got.Payload) != "pushed" {
		t.Fatal("the stored notification must answer")
	}
	sameExceptMaxAge(t, withoutObserve(note), got)
	if f.c.Store(k, &coap.Message{Code: coap.Changed}) {
		t.Fatal("2.04 stored")
	}
	if _, ok := KeyOf(&coap.Request{Msg: &coap.Message{Code: coap.POST}}); ok {
		t.Fatal("POST has a key")
	}
	f.c.Invalidate(k)
	if f.c.Stats().Entries != 0 {
		t.Fatal("Invalidate left the entry")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"max_bytes 0":      func(c *Config) { c.MaxBytes = 0 },
		"entry over total": func(c *Config) { c.MaxEntryBytes = c.MaxBytes + 1 },
		"entry negative":   func(c *Config) { c.MaxEntryBytes = -1 },
		"max age over 60s": func(c *Config) { c.DefaultMaxAge = 61 * time.Second },
		"max age under 1s": func(c *Config) { c.DefaultMaxAge = time.Millisecond },
	} {
		c := Defaults()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A key whose responses cannot be stored is not coalesced: a waiter would
// learn only that there is nothing to share, then go upstream itself, a
// whole exchange late. A storable response makes it coalescable again.
func TestUncacheableKeyIsNotCoalesced(t *testing.T) {
	maxAge := 0
	var inside sync.WaitGroup
	release := make(chan struct{})
	block := false
	var mu sync.Mutex
	o := newOrigin(func(int, *coap.Message) *coap.Message {
		mu.Lock()
		defer mu.Unlock()
		return content("x", 0, "", maxAge)
	})
	c := New(Defaults())
	stage := c.Stage(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		mu.Lock()
		b := block
		mu.Unlock()
		if b {
			inside.Done()
			<-release
		}
		return o.ServeCoAP(ctx, w, r)
	}))
	if err := stage.ServeCoAP(context.Background(), coaptest.NewRecorder(nil), get(target)); err != nil {
		t.Fatal(err)
	}
	// Now n identical requests at once: every one must reach the origin
	// while the others are still waiting for theirs.
	const n = 4
	mu.Lock()
	block = true
	mu.Unlock()
	inside.Add(n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := coaptest.NewRecorder(nil)
			if err := stage.ServeCoAP(context.Background(), w, get(target)); err != nil {
				t.Error(err)
			}
			if m := w.Msg(); m == nil || string(m.Payload) != "x" {
				t.Errorf("got %v", m)
			}
		}()
	}
	all := make(chan struct{})
	go func() { inside.Wait(); close(all) }()
	select {
	case <-all:
		close(release)
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("identical requests were held back behind one another's flight")
	}
	wg.Wait()
	if got := o.count(); got != 1+n {
		t.Fatalf("origin called %d times, want %d", got, 1+n)
	}
	if s := c.Stats(); s.Coalesced != 0 {
		t.Fatalf("coalesced = %d", s.Coalesced)
	}
	// A storable answer ends the exception.
	mu.Lock()
	block, maxAge = false, 30
	mu.Unlock()
	if err := stage.ServeCoAP(context.Background(), coaptest.NewRecorder(nil), get(target)); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	_, still := c.unshared[mustKey(t, get(target)).ID]
	c.mu.Unlock()
	if still {
		t.Fatal("key still marked unshared after a cacheable response")
	}
}

// When the next stage answers later (coap.Later), the cache stores and
// answers from the answer's continuation, whether the answer comes after
// the stages returned (as on an endpoint) or before (Later outside one
// starts at once).
func TestForwardAnsweredLaterIsStoredAndAnswered(t *testing.T) {
	for _, before := range []bool{false, true} {
		o := newOrigin(always(content("x", 0, "", 30)))
		c := New(Defaults())
		stage := c.Stage(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			answered := make(chan struct{})
			err := coap.Later(ctx, func() {
				go func() {
					o.ServeCoAP(ctx, w, r)
					coap.Finish(w, nil)
					close(answered)
				}()
			})
			if before {
				<-answered // the answer is in before the stage returns
			}
			return err
		}))
		w := coaptest.NewRecorder(nil)
		if err := stage.ServeCoAP(context.Background(), w, get(target)); !errors.Is(err, coap.ErrLater) {
			t.Fatalf("before=%v: %v, want ErrLater", before, err)
		}
		w.WaitFor(t, "the request to end", func(r *coaptest.Recorder) bool { return r.Finishes() > 0 })
		if err := w.Err(); err != nil || w.Finishes() != 1 {
			t.Fatalf("before=%v: Finish(%v), %d times", before, err, w.Finishes())
		}
		if m := w.Msg(); m == nil || string(m.Payload) != "x" {
			t.Fatalf("before=%v: client got %v", before, m)
		}
		hit := coaptest.NewRecorder(nil)
		if err := stage.ServeCoAP(context.Background(), hit, get(target)); err != nil {
			t.Fatal(err)
		}
		if o.count() != 1 || hit.Msg() == nil || c.Stats().Hits != 1 {
			t.Fatalf("before=%v: origin %d calls, hits %d: the answer was not stored", before, o.count(), c.Stats().Hits)
		}
	}
}

// The router hands its upstream's response over (coap.WriteOwned): the
// capture keeps that message itself, and a copy of anything else.
func TestCaptureKeepsAHandedOverResponse(t *testing.T) {
	m := &coap.Message{Code: coap.Content, Payload: []byte("x")}
	var owned capture
	ow := coap.WrapWriter(coaptest.NewRecorder(nil), &owned)
	if err := coap.WriteOwned(ow, m); err != nil || owned.resp != m {
		t.Fatalf("handed over: kept %p (err %v), want %p", owned.resp, err, m)
	}
	var copied capture
	if err := coap.WrapWriter(coaptest.NewRecorder(nil), &copied).WriteResponse(m); err != nil || copied.resp == m || string(copied.resp.Payload) != "x" {
		t.Fatalf("written: kept %p %v (err %v), want a copy of %p", copied.resp, copied.resp, err, m)
	}
	if err := coap.WriteOwned(ow, m); !errors.Is(err, coap.ErrAnswered) {
		t.Fatalf("second answer: %v", err)
	}
}

// The capture is allocated with the writer it wraps for every request
// forwarded (coap.WrapWriterWith): at 48 bytes the two fit the 96-byte
// size class, at 56 the 112-byte one (BenchmarkForwardGET's B/op in bridge).
func TestCaptureIsSmall(t *testing.T) {
	if n := unsafe.Sizeof(capture{}); n > 48 {
		t.Errorf("capture is %d bytes, want at most 48", n)
	}
}
