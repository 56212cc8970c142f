package cache

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

// FuzzKey drives the key over arbitrary messages: it never panics, a
// NoCacheKey option (§5.4.6) never changes it, an option that is a cache
// key always does, and Rep is the ID of the message without Block2
// (RFC 7959 §2.10).
func FuzzKey(f *testing.F) {
	for _, r := range []*coap.Request{
		get(target),
		get("coap://Node.Example:5683/a%2Fb?x=1&y", uintOpt(coap.Accept, 50), opt(coap.ETag, "e")),
		get(target, opt(coap.OSCORE, "\x19\x00"), opt(coap.RequestHash, "h")),
		get(target, opt(coap.IfNoneMatch, ""), uintOpt(coap.Block2, 0x12), opt(65000, "x"), uintOpt(coap.Accept, 60)),
	} {
		b, _ := r.Msg.Marshal()
		f.Add(b, uint16(65000), []byte("v"))
	}
	f.Add([]byte{0x40, 0x05, 0, 1, 0xb4, 't', 'e', 'm', 'p', 0xff, 'q'}, uint16(60), []byte{})
	f.Fuzz(func(t *testing.T, raw []byte, id uint16, val []byte) {
		var m coap.Message
		if m.Decode(raw) != nil {
			return
		}
		r := &coap.Request{Msg: &m}
		k1, ok := KeyOf(r)
		if !ok {
			return
		}
		oid := coap.OptionID(id)
		m2 := m.Clone()
		m2.Options = m2.Options.Insert(oid, val)
		k2, ok2 := KeyOf(&coap.Request{Msg: m2})
		switch {
		case oid.NoCacheKey():
			if !ok2 || k1 != k2 {
				t.Fatalf("NoCacheKey option %v changed the key", oid)
			}
		case inKey(oid):
			if ok2 && k1.ID == k2.ID {
				t.Fatalf("cache-key option %v left the key unchanged", oid)
			}
		}
		nb := m.Clone()
		nb.Options = nb.Options.Remove(coap.Block2)
		if k3, ok := KeyOf(&coap.Request{Msg: nb}); !ok || k3.ID != k1.Rep {
			t.Fatal("Rep is not the ID of the request without Block2")
		}
		s := &coap.Request{Msg: m.Clone(), Secure: true}
		if k3, ok := KeyOf(s); ok && k3.ID == k1.ID {
			t.Fatal("coaps and coap share a key (§11.2)")
		}
	})
}

// FuzzProxyURIForms checks the normalization against coap.ParseURI, which
// the router uses: whenever both read a Proxy-Uri, the key is the one of
// the Proxy-Scheme + Uri-* form the router derives from it.
func FuzzProxyURIForms(f *testing.F) {
	for _, s := range []string{
		"coap://node1.example/a%2Fb/c?x=1&y", "coap://[fd00::1]:61616/", "COAPS://H/%7e?",
		"coap://1.2.3.4/a//b/", "coap://[::ffff:1.2.3.4]/x", "http://h:80/?a&&b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a := &coap.Message{Code: coap.GET}
		a.Options = a.Options.Insert(coap.ProxyURI, []byte(s))
		ka, ok := KeyOf(&coap.Request{Msg: a})
		u, err := coap.ParseURI(s)
		if !ok || err != nil {
			return
		}
		b := &coap.Message{Code: coap.GET}
		b.Options = u.SetOptions(b.Options, u.Port^1).Remove(coap.URIHost). // Uri-Port always explicit
											Insert(coap.ProxyScheme, []byte(u.Scheme)).Insert(coap.URIHost, []byte(u.Host))
		kb, ok := KeyOf(&coap.Request{Msg: b})
		if !ok {
			t.Fatalf("Proxy-Scheme form of %q (%s) has no key", s, u)
		}
		if ka != kb {
			t.Fatalf("%q and its Proxy-Scheme form %s have different keys", s, u)
		}
	})
}

// FuzzParseIP checks the allocation-free IP parser against net/netip.
func FuzzParseIP(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "::", "::1", "fd00::1", "1::", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "01.2.3.4", "1:2:3:4:5:6:1.2.3.4", "fe80::1%eth0", "::1:2:3:4:5:6:7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, is4, ok := parseIP([]byte(s))
		want, err := netip.ParseAddr(s)
		if err != nil || want.Zone() != "" {
			if ok {
				t.Fatalf("parseIP accepted %q, netip did not", s)
			}
			return
		}
		if !ok {
			t.Fatalf("parseIP refused %q", s)
		}
		if is4 != want.Is4() || !is4 && a != want.As16() || is4 && [4]byte(a[12:]) != want.As4() {
			t.Fatalf("parseIP(%q) = %x (v4 %v), netip %v", s, a, is4, want)
		}
	})
}

func hitFixture(tb testing.TB) (*Cache, *coap.Request) {
	tb.Helper()
	c := New(Defaults())
	r := get("coap://[fd00::1]/sensors/temp?unit=c", uintOpt(coap.Accept, 0), coap.Option{ID: coap.HopLimit, Value: []byte{15}})
	o := newOrigin(always(content("22.5", 0, "e1", 60)))
	w := coaptest.NewRecorder(nil)
	if err := c.Stage(o).ServeCoAP(context.Background(), w, r); err != nil {
		tb.Fatal(err)
	}
	return c, r
}

func BenchmarkKeyAndLookup(b *testing.B) {
	c, r := hitFixture(b)
	now := c.now()
	b.ReportAllocs()
	for b.Loop() {
		k, _ := encodeKey(r)
		c.lookup(r.Msg, &k, k.id(), hopLimit(r.Msg), now)
		k.release()
	}
}

type discard struct{ n int }

func (d *discard) WriteResponse(m *coap.Message) error { d.n += len(m.Payload); return nil }

func BenchmarkHit(b *testing.B) {
	c, r := hitFixture(b)
	stage := c.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		b.Fatal("miss")
		return nil
	}))
	w := &discard{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := stage.ServeCoAP(ctx, w, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHitParallel(b *testing.B) {
	c, r := hitFixture(b)
	stage := c.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		b.Error("miss")
		return nil
	}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discard{}
		for pb.Next() {
			stage.ServeCoAP(context.Background(), w, r)
		}
	})
}

func TestHitAnswerLeavesStoreUntouched(t *testing.T) {
	c, r := hitFixture(t)
	w := coaptest.NewRecorder(nil)
	c.Stage(nil).ServeCoAP(context.Background(), w, r)
	k := mustKey(t, r)
	c.mu.Lock()
	stored := c.entries[k.ID].resp
	c.mu.Unlock()
	if got := w.Msg(); !bytes.Equal(got.Payload, stored.Payload) || stored.Options.Has(coap.MaxAge) && maxAgeOf(t, stored) != 60 {
		t.Fatal("the stored response changed")
	}
}
