package rd

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
	"github.com/opaque-edge/gatewayd/internal/filestore"
)

// memStore keeps records in memory: the fuzz target registers once per
// input, and a file written and synced per input would be all it did.
type memStore struct {
	mu   sync.Mutex
	recs map[string][]byte // guarded by mu
}

func (s *memStore) Save(id string, rec []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[id] = slices.Clone(rec)
	return nil
}

func (s *memStore) Remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, id)
	return nil
}

func (s *memStore) Load() ([]filestore.Record, []error) { return nil, nil }

// splitQuery turns "a=1&b" into Uri-Query values, as a client would send
// them; "" is none.
func splitQuery(q string) []string {
	if q == "" {
		return nil
	}
	return strings.Split(q, "&")
}

// fuzzGet sends a lookup from loopback with the given Uri-Query values.
func fuzzGet(t *testing.T, stage coap.Handler, path string, query []string) *coap.Message {
	t.Helper()
	m := msg(coap.GET, path, "")
	for _, q := range query {
		m.Options = m.Options.Insert(coap.URIQuery, []byte(q))
	}
	w := &recorder{}
	if err := stage.ServeCoAP(context.Background(), w, &coap.Request{Msg: m, Peer: netip.MustParseAddrPort("[::1]:40000")}); err != nil {
		t.Fatalf("GET %s %q: %v", path, query, err)
	}
	if w.resp == nil {
		t.Fatalf("GET %s %q: no response", path, query)
	}
	return w.resp
}

// isSubsequence reports whether every link of sub is in all, in the same
// order.
func isSubsequence(sub, all []Link) bool {
	i := 0
	for _, l := range sub {
		for i < len(all) && !linkEqual(all[i], l) {
			i++
		}
		if i == len(all) {
			return false
		}
		i++
	}
	return true
}

func linkEqual(a, b Link) bool {
	return a.Target == b.Target && slices.Equal(a.Params, b.Params)
}

// FuzzFilterLinks registers a link-format document a registrant chose and
// looks it up with criteria a client chose (RFC 9176 §5, §6.2). No input
// panics; a registration is 2.01 or refused with 4.xx, never 5.xx; a
// lookup is 2.05 in link format that parses back, or 4.00 for a bad page
// or count; a filtered answer holds only links of the unfiltered one, in
// its order; one more criterion never widens an answer; count bounds it.
func FuzzFilterLinks(f *testing.F) {
	for _, d := range realDocuments {
		f.Add(d, "rt=temperature*", "if=sensor")
	}
	f.Add(`</sensors/temp>;rt="temperature-c";if=sensor;ct="0 60";osc`, "ct=60", "count=1&page=0")
	f.Add(`</a>;anchor="/b";rel="x y",<coap://h/c>;title="\"q\""`, "href=coap://*", "rel=y")
	f.Add(`</a>,</b>;rt=x,</c>;rt=x`, "rt=x", "count=1")
	f.Add(`</a>`, "ep=fz", "d")
	f.Add(`</a>;x=""`, "x=", "page=1&count=0")

	cfg := Defaults()
	cfg.Enabled = true
	cfg.StateDir = "/nonexistent" // the memory store stands in for it
	cfg.MaxLinks = 16
	cfg.MaxBytes = 2048
	d, err := New(cfg, WithClock(clocktest.New(epoch)), WithRadioPrefixes([]netip.Prefix{radioNet}),
		withStore(&memStore{recs: map[string][]byte{}}))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	stage := d.Stage(coap.HandlerFunc(func(_ context.Context, w coap.ResponseWriter, _ *coap.Request) error {
		return w.WriteResponse(&coap.Message{Code: coap.NotImplemented})
	}))

	f.Fuzz(func(t *testing.T, doc, q1, q2 string) {
		reg := msg(coap.POST, "/rd?ep=fz&et=fuzz", doc)
		w := &recorder{}
		if err := stage.ServeCoAP(context.Background(), w, &coap.Request{Msg: reg, Peer: node1}); err != nil {
			t.Fatal(err)
		}
		switch c := w.resp.Code; {
		case c == coap.Created:
		case c.Class() == 4:
			return
		default:
			t.Fatalf("registration of %q: %v %s", doc, c, w.resp.Payload)
		}
		defer func() {
			del := &recorder{}
			m := &coap.Message{Code: coap.DELETE}
			for v := range w.resp.Options.All(coap.LocationPath) {
				m.Options = m.Options.Insert(coap.URIPath, v)
			}
			stage.ServeCoAP(context.Background(), del, &coap.Request{Msg: m, Peer: node1})
			if del.resp == nil || del.resp.Code != coap.Deleted {
				t.Fatalf("removal: %v", del.resp)
			}
		}()
		for _, path := range []string{"/rd-lookup/res", "/rd-lookup/ep"} {
			all := parseAnswer(t, fuzzGet(t, stage, path, nil), 16)
			want := 1 // the endpoint
			if path == "/rd-lookup/res" {
				links, err := ParseLinks(doc, 16)
				if err != nil {
					t.Fatalf("registered %q, which does not parse: %v", doc, err)
				}
				want = len(links)
			}
			if len(all) != want {
				t.Fatalf("%s: %d links unfiltered, want %d: %q", path, len(all), want, all)
			}
			one := fuzzGet(t, stage, path, splitQuery(q1))
			both := fuzzGet(t, stage, path, append(splitQuery(q1), splitQuery(q2)...))
			if one.Code == coap.BadRequest || both.Code == coap.BadRequest {
				// Only page and count can make a lookup bad.
				if !strings.Contains(q1+"&"+q2, "page") && !strings.Contains(q1+"&"+q2, "count") {
					t.Fatalf("%s?%s&%s: 4.00 %s", path, q1, q2, both.Payload)
				}
				continue
			}
			l1, l2 := parseAnswer(t, one, 16), parseAnswer(t, both, 16)
			if !isSubsequence(l1, all) || !isSubsequence(l2, all) {
				t.Fatalf("%s: a filtered answer holds links the unfiltered one lacks:\n%q\n%q\n%q", path, all, l1, l2)
			}
			if n, ok := onlyCount(append(splitQuery(q1), splitQuery(q2)...)); ok && len(l2) > n {
				t.Fatalf("%s?%s&%s: %d links, count %d", path, q1, q2, len(l2), n)
			}
			paged := strings.Contains(q1+"&"+q2, "page") || strings.Contains(q1+"&"+q2, "count")
			if !paged && !isSubsequence(l2, l1) {
				t.Fatalf("%s: criterion %q widened the answer:\n%q\n%q", path, q2, l1, l2)
			}
		}
	})
}

// onlyCount is the value of the one count=N among qs, if there is one
// and it is a plain number.
func onlyCount(qs []string) (int, bool) {
	n, found := 0, false
	for _, q := range qs {
		v, ok := strings.CutPrefix(q, "count=")
		if !ok {
			continue
		}
		if found {
			return 0, false
		}
		found = true
		if v == "" || len(v) > 6 || strings.Trim(v, "0123456789") != "" {
			return 0, false
		}
		for _, c := range v {
			n = n*10 + int(c-'0')
		}
	}
	return n, found
}

// parseAnswer checks a lookup's answer: 2.05, link format, at most max
// links.
func parseAnswer(t *testing.T, m *coap.Message, max int) []Link {
	t.Helper()
	if m.Code != coap.Content {
		t.Fatalf("lookup: %v %s", m.Code, m.Payload)
	}
	if cf, _ := m.Options.Uint(coap.ContentFormat); cf != cfLinkFormat {
		t.Fatalf("lookup: Content-Format %d", cf)
	}
	if len(m.Payload) == 0 {
		return nil
	}
	links, err := ParseLinks(string(m.Payload), max)
	if err != nil {
		t.Fatalf("lookup answer %q does not parse: %v", m.Payload, err)
	}
	return links
}
