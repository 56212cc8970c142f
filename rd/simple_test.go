package rd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// fakeNode answers the directory's GETs of /.well-known/core as a
// registrant would, and records them.
type fakeNode struct {
	mu     sync.Mutex
	gets   []netip.AddrPort
	reqs   []*coap.Message
	answer func(req *coap.Message) (*coap.Message, error)
}

func (n *fakeNode) fetch(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	n.mu.Lock()
	n.gets = append(n.gets, target)
	n.reqs = append(n.reqs, req.Clone())
	answer := n.answer
	n.mu.Unlock()
	return answer(req)
}

func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.gets)
}

func wellKnown(doc string, maxAge int) func(*coap.Message) (*coap.Message, error) {
	return func(*coap.Message) (*coap.Message, error) {
		m := &coap.Message{Code: coap.Content, Payload: []byte(doc)}
		m.Options = m.Options.SetUint(coap.ContentFormat, cfLinkFormat).SetUint(coap.MaxAge, uint32(maxAge))
		return m, nil
	}
}

// §5.1: POST /.well-known/rd with an empty payload makes the directory
// GET the registrant's /.well-known/core (Accept: 40) at the address and
// port it came from, register those links under the implicit base, and
// answer 2.04 without a location. While the fetched document is fresh
// (its Max-Age) a refresh does not fetch it again.
func TestSimpleRegistrationFetchesTheRegistrantsWellKnownCore(t *testing.T) {
	n := &fakeNode{answer: wellKnown(`</sensors/temp>;rt="temperature-c";obs,</oscore/temp>;rt="temperature-c";osc`, 120)}
	r := newRig(t, nil, WithFetch(n.fetch))
	resp := r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=node1&lt=600", ""))
	wantCode(t, "simple registration", resp, coap.Changed)
	if resp.Options.Has(coap.LocationPath) {
		t.Fatal("simple registration answered with a location")
	}
	if n.count() != 1 || n.gets[0] != node1 {
		t.Fatalf("GETs %v", n.gets)
	}
	got := n.reqs[0]
	if got.Code != coap.GET || location(&coap.Message{Options: renamePath(got.Options)}) != "/.well-known/core" {
		t.Fatalf("the directory asked %v %v", got.Code, got.Options)
	}
	if a, _ := got.Options.Uint(coap.Accept); a != cfLinkFormat {
		t.Fatalf("Accept %d", a)
	}
	// The osc attribute is kept as registered (RFC 8613 §9).
	want := `<coap://[fd00:db8:1::1]/sensors/temp>;rt=temperature-c;obs,<coap://[fd00:db8:1::1]/oscore/temp>;rt=temperature-c;osc`
	if lookup := r.get("/rd-lookup/res"); lookup != want {
		t.Fatalf("lookup %s", lookup)
	}
	eps := r.d.Endpoints()
	if len(eps) != 1 || !eps[0].Simple || eps[0].Addr != node1.Addr() || eps[0].From != node1 || eps[0].Lifetime != 600 {
		t.Fatalf("endpoints %+v", eps)
	}
	r.clock.Advance(100 * time.Second)
	wantCode(t, "refresh within Max-Age", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=node1&lt=600", "")), coap.Changed)
	if n.count() != 1 {
		t.Fatalf("fetched again while fresh: %d GETs", n.count())
	}
	r.clock.Advance(30 * time.Second)
	wantCode(t, "refresh after Max-Age", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=node1&lt=600", "")), coap.Changed)
	if n.count() != 2 {
		t.Fatalf("not fetched after Max-Age: %d GETs", n.count())
	}
	if s := r.d.Stats(); s.Registered != 1 || s.Refreshed != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// renamePath turns Uri-Path options into Location-Path ones, for
// location to print.
func renamePath(o coap.Options) coap.Options {
	var out coap.Options
	for v := range o.All(coap.URIPath) {
		out = out.Insert(coap.LocationPath, v)
	}
	return out
}

// Simple registration that cannot complete tells the registrant why and
// registers nothing: a silent node (5.04), an error answer (5.02), a
// document over max_bytes (4.13), one that is not link format (4.00).
// A name another client holds is refused before the node is asked.
// Parameters it does not take: base, a payload.
func TestSimpleRegistrationFailures(t *testing.T) {
	big := "</" + strings.Repeat("x", 600) + ">"
	for _, tc := range []struct {
		name   string
		answer func(*coap.Message) (*coap.Message, error)
		code   coap.Code
	}{
		{"silent", func(*coap.Message) (*coap.Message, error) { return nil, coap.ErrTimeout }, coap.GatewayTimeout},
		{"4.04", func(*coap.Message) (*coap.Message, error) { return &coap.Message{Code: coap.NotFound}, nil }, coap.BadGateway},
		{"unreachable", func(*coap.Message) (*coap.Message, error) { return nil, errors.New("radio down") }, coap.BadGateway},
		{"too large", wellKnown(big, 60), coap.RequestEntityTooLarge},
		{"not link format", wellKnown("garbage", 60), coap.BadRequest},
		{"JSON", func(*coap.Message) (*coap.Message, error) {
			m := &coap.Message{Code: coap.Content, Payload: []byte("[]")}
			m.Options = m.Options.SetUint(coap.ContentFormat, 50)
			return m, nil
		}, coap.BadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &fakeNode{answer: tc.answer}
			r := newRig(t, func(c *Config) { c.MaxBytes = 512 }, WithFetch(n.fetch))
			resp := r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=node1", ""))
			wantCode(t, tc.name, resp, tc.code)
			if s := r.d.Stats(); s.Registrations != 0 || s.SimpleFailures != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
	n := &fakeNode{answer: wellKnown("</a>", 60)}
	r := newRig(t, nil, WithFetch(n.fetch))
	r.register(node2, "ep=taken", "</a>")
	wantCode(t, "taken name", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=taken", "")), coap.Forbidden)
	wantCode(t, "base", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=a&base=coap://[fd00::1]", "")), coap.BadRequest)
	wantCode(t, "payload", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=a", "</x>")), coap.BadRequest)
	wantCode(t, "GET", r.from(context.Background(), node1, msg(coap.GET, "/.well-known/rd", "")), coap.MethodNotAllowed)
	if n.count() != 0 {
		t.Fatalf("%d GETs for requests refused beforehand", n.count())
	}
	off := newRig(t, func(c *Config) { c.Simple = false }, WithFetch(n.fetch))
	wantCode(t, "simple off", off.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=a", "")), coap.Forbidden)
}

// The GET of a large /.well-known/core goes block by block (RFC 7959)
// and the whole document is registered; fetch_timeout bounds it all.
func TestSimpleRegistrationFollowsBlocksWithinTheTimeout(t *testing.T) {
	var links []string
	for i := range 40 {
		links = append(links, fmt.Sprintf("</res/%02d>;rt=x", i))
	}
	doc := strings.Join(links, ",")
	blocks := func(req *coap.Message) (*coap.Message, error) {
		num := 0
		if v, ok := req.Options.Uint(coap.Block2); ok {
			num = int(v >> 4)
		}
		const size = 64
		end := min((num+1)*size, len(doc))
		m := &coap.Message{Code: coap.Content, Payload: []byte(doc[num*size : end])}
		more := 0
		if end < len(doc) {
			more = 8
		}
		m.Options = m.Options.SetUint(coap.ContentFormat, cfLinkFormat).SetUint(coap.Block2, uint32(num<<4|more|2))
		return m, nil
	}
	n := &fakeNode{answer: blocks}
	r := newRig(t, func(c *Config) { c.MaxLinks = 40 }, WithFetch(n.fetch))
	wantCode(t, "simple registration", r.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=big", "")), coap.Changed)
	if got := names(t, r.get("/rd-lookup/res"), false); len(got) != 40 || n.count() < 2 {
		t.Fatalf("%d links in %d GETs", len(got), n.count())
	}

	r2 := newRig(t, func(c *Config) { c.FetchTimeout = Duration{50 * time.Millisecond} }, WithFetch(func(ctx context.Context, _ netip.AddrPort, _ *coap.Message) (*coap.Message, error) {
		<-ctx.Done() // a node that never answers; the deadline ends the wait
		return nil, ctx.Err()
	}))
	wantCode(t, "silent node", r2.from(context.Background(), node1, msg(coap.POST, "/.well-known/rd?ep=a", "")), coap.GatewayTimeout)
}
