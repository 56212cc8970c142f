package rd

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

const sensorDoc = `</sensors/temp>;rt="temperature-c";if=sensor;ct=0;obs,` +
	`<http://www.example.com/sensors/temp>;anchor="/sensors/temp";rel=describedby`

// §5: a registration gets 2.01 with a Location-Path of its registration
// resource, no Location-Query; resource lookup shows its links resolved
// against the base taken from the source address (§6.1), absolute ones
// as they came, the anchor resolved too.
func TestRegisterCreatesLocationAndLookupResolvesLinks(t *testing.T) {
	r := newRig(t, nil)
	resp := r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=node1&lt=600", sensorDoc, coap.ContentFormat, cfLinkFormat))
	wantCode(t, "register", resp, coap.Created)
	loc := location(resp)
	if !strings.HasPrefix(loc, "/rd/") || len(loc) != len("/rd/")+8 || resp.Options.Has(coap.LocationQuery) {
		t.Fatalf("location %q, options %v", loc, resp.Options)
	}
	want := `<coap://[fd00:db8:1::1]/sensors/temp>;rt=temperature-c;if=sensor;ct=0;obs,` +
		`<http://www.example.com/sensors/temp>;anchor="coap://[fd00:db8:1::1]/sensors/temp";rel=describedby`
	if got := r.get("/rd-lookup/res"); got != want {
		t.Fatalf("resource lookup:\n got %s\nwant %s", got, want)
	}
	wantEP := `<` + loc + `>;ep=node1;base="coap://[fd00:db8:1::1]";rt=core.rd-ep`
	if got := r.get("/rd-lookup/ep"); got != wantEP {
		t.Fatalf("endpoint lookup:\n got %s\nwant %s", got, wantEP)
	}
	if s := r.d.Stats(); s.Registrations != 1 || s.Links != 2 || s.Registered != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// §5: an explicit base is what links resolve against, and the implicit
// one names the port when it is not 5683.
func TestBaseParameterAndImplicitPort(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Registrants = append(c.Registrants, "2001:db8::/32") })
	r.register(netip.MustParseAddrPort("[2001:db8::7]:61616"), "ep=a", "</x>")
	r.register(stranger, "ep=b&base=coap://sensor.example:5700", "</y>")
	got := r.get("/rd-lookup/res")
	want := "<coap://[2001:db8::7]:61616/x>,<coap://sensor.example:5700/y>"
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// §5: registering the same (ep, d) again replaces its links and
// parameters and answers with the same location; it is one registration.
func TestReRegistrationReplacesLinksAtTheSameLocation(t *testing.T) {
	r := newRig(t, nil)
	loc := r.register(node1, "ep=node1&et=oic.d.sensor", "</a>,</b>")
	again := r.register(node1, "ep=node1", "</c>")
	if again != loc {
		t.Fatalf("second location %q, first %q", again, loc)
	}
	if got := r.get("/rd-lookup/res"); got != "<coap://[fd00:db8:1::1]/c>" {
		t.Fatalf("links %s", got)
	}
	if got := r.get("/rd-lookup/ep"); strings.Contains(got, "et=") {
		t.Fatalf("the attributes were not replaced: %s", got)
	}
	if s := r.d.Stats(); s.Registrations != 1 || s.Registered != 1 || s.Refreshed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// What a registration request gets wrong is a 4.00 (or 4.15) with a
// diagnostic, and nothing is registered.
func TestRegistrationRequestsAreChecked(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		name, query, doc string
		opts             []any
		code             coap.Code
		diag             string
	}{
		{"no ep", "lt=600", "</a>", nil, coap.BadRequest, "ep is required"},
		{"empty ep", "ep=", "</a>", nil, coap.BadRequest, "ep is empty"},
		{"ep of 64 bytes", "ep=" + strings.Repeat("n", 64), "</a>", nil, coap.BadRequest, "63 bytes"},
		{"control character", "ep=a\x07b", "</a>", nil, coap.BadRequest, "control character"},
		{"C1 control", "ep=a\u0085b", "</a>", nil, coap.BadRequest, "control character"},
		{"ep twice", "ep=a&ep=b", "</a>", nil, coap.BadRequest, "twice"},
		{"lt 0", "ep=a&lt=0", "</a>", nil, coap.BadRequest, "1-4294967295"},
		{"lt not a number", "ep=a&lt=1h", "</a>", nil, coap.BadRequest, "1-4294967295"},
		{"lt below min_lifetime", "ep=a&lt=59", "</a>", nil, coap.BadRequest, "min_lifetime"},
		{"lt above max_lifetime", "ep=a&lt=604801", "</a>", nil, coap.BadRequest, "max_lifetime"},
		{"base not a URI", "ep=a&base=sensor", "</a>", nil, coap.BadRequest, "absolute URI"},
		{"base with query", "ep=a&base=coap://[2001:db8::1]?x", "</a>", nil, coap.BadRequest, "query"},
		{"link-local base", "ep=a&base=coap://[fe80::1]", "</a>", nil, coap.BadRequest, "link-local"},
		{"base with zone", "ep=a&base=coap://[fd00::1%25eth0]", "</a>", nil, coap.BadRequest, "zone"},
		{"base breaking link format", `ep=a&base=coap://h/">`, "</a>", nil, coap.BadRequest, "base"},
		{"relative reference", "ep=a", "<sensors/temp>", nil, coap.BadRequest, "Appendix C"},
		{"relative anchor", "ep=a", `</a>;anchor="b"`, nil, coap.BadRequest, "Appendix C"},
		{"not link format", "ep=a", "hello", nil, coap.BadRequest, "link format"},
		{"page as an attribute", "ep=a&page=1", "</a>", nil, coap.BadRequest, "not a registration parameter"},
		{"bad attribute name", "ep=a&x y=1", "</a>", nil, coap.BadRequest, "parameter name"},
		{"proxy=no", "ep=a&proxy=no", "</a>", nil, coap.BadRequest, "proxy"},
		{"CBOR links", "ep=a", "</a>", []any{coap.ContentFormat, 60}, coap.UnsupportedContentFormat, "link-format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := r.from(context.Background(), node1, msg(coap.POST, "/rd?"+tc.query, tc.doc, tc.opts...))
			wantCode(t, tc.name, resp, tc.code)
			if !strings.Contains(string(resp.Payload), tc.diag) {
				t.Fatalf("diagnostic %q lacks %q", resp.Payload, tc.diag)
			}
		})
	}
	if s := r.d.Stats(); s.Registrations != 0 || s.Rejected == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// §7.5, §8.2: an endpoint name held by one client is refused to another
// (4.03) and stays as it was, whatever the sector; the holder keeps it.
// A DTLS identity is the holder wherever it connects from.
func TestNameHeldByAnotherClientIsRefused(t *testing.T) {
	r := newRig(t, nil)
	loc := r.register(node1, "ep=node1", "</a>")
	for _, tc := range []struct{ query, diag string }{
		{"ep=node1", "registered by another client"},
		{"ep=node1&d=other", "registered by another client"},
		{"ep=NODE1", "registered by another client"},
	} {
		resp := r.from(context.Background(), node2, msg(coap.POST, "/rd?"+tc.query, "</evil>"))
		wantCode(t, "takeover by "+tc.query, resp, coap.Forbidden)
		if !strings.Contains(string(resp.Payload), tc.diag) {
			t.Fatalf("%s: %q", tc.query, resp.Payload)
		}
	}
	if got := r.get("/rd-lookup/res"); got != "<coap://[fd00:db8:1::1]/a>" {
		t.Fatalf("after the attempts: %s", got)
	}
	if u, ok := r.d.Route("node1"); !ok || u.Host != "fd00:db8:1::1" {
		t.Fatalf("route %v %v", u, ok)
	}
	// The holder itself, from another port, keeps its registration.
	if again := r.register(netip.AddrPortFrom(node1.Addr(), 40001), "ep=node1&base=coap://[fd00:db8:1::1]", "</b>"); again != loc {
		t.Fatalf("the holder's re-registration moved to %s", again)
	}
	// The same name in another sector is refused to the holder too: one
	// name, one route.
	resp := r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=node1&d=floor2", "</c>"))
	wantCode(t, "same name, other sector", resp, coap.Forbidden)
	if s := r.d.Stats(); s.NameConflicts != 4 || s.Registrations != 1 {
		t.Fatalf("stats %+v", s)
	}

	// DTLS: the identity holds the name.
	r2 := newRig(t, func(c *Config) { c.Registrants = []string{"psk:a", "psk:b"} })
	req := func(id string, peer netip.AddrPort) *coap.Request {
		return &coap.Request{Msg: msg(coap.POST, "/rd?ep=dev", "</x>"), Peer: peer, Identity: id, Secure: true}
	}
	wantCode(t, "psk:a registers", r2.as(context.Background(), req("psk:a", stranger)), coap.Created)
	wantCode(t, "psk:a from elsewhere", r2.as(context.Background(), req("psk:a", node2)), coap.Created)
	wantCode(t, "psk:b", r2.as(context.Background(), req("psk:b", stranger)), coap.Forbidden)
	if got := r2.get("/rd-lookup/ep"); !strings.Contains(got, `base="coaps://[fd00:db8:1::2]:5683"`) {
		t.Fatalf("DTLS registration's implicit base: %s", got)
	}
}

// §5.3.1: an update restarts the lifetime with the last lt, may change
// lt, base and attributes, and re-resolves the links against a new base.
func TestUpdateRestartsLifetimeAndChangesBaseAndAttributes(t *testing.T) {
	r := newRig(t, nil)
	loc := r.register(node1, "ep=node1&lt=100&et=a", "</s>")
	r.clock.Advance(90 * time.Second)
	wantCode(t, "update", r.from(context.Background(), node1, msg(coap.POST, loc, "")), coap.Changed)
	r.clock.Advance(90 * time.Second) // 180 s after registering, 90 after the update
	if got := r.get("/rd-lookup/ep"); !strings.Contains(got, "ep=node1") {
		t.Fatalf("the update did not restart the lifetime: %q", got)
	}
	wantCode(t, "update base, lt, et", r.from(context.Background(), node1, msg(coap.POST, loc+"?lt=300&base=coap://[fd00:db8:1::99]&et=b&x=1", "")), coap.Changed)
	if got := r.get("/rd-lookup/res"); got != "<coap://[fd00:db8:1::99]/s>" {
		t.Fatalf("links after the base changed: %s", got)
	}
	if got := r.get("/rd-lookup/ep"); !strings.Contains(got, ";et=b;x=1") || strings.Contains(got, "et=a") {
		t.Fatalf("attributes after the update: %s", got)
	}
	r.clock.Advance(299 * time.Second)
	if r.d.Stats().Registrations != 1 {
		t.Fatal("gone before the new lt")
	}
	r.clock.Advance(time.Second)
	if r.d.Stats().Registrations != 0 {
		t.Fatal("still there after the new lt")
	}
	for _, tc := range []struct {
		path, payload string
		code          coap.Code
	}{
		{loc, "", coap.NotFound},
	} {
		wantCode(t, "update of an expired registration", r.from(context.Background(), node1, msg(coap.POST, tc.path, tc.payload)), tc.code)
	}
}

// An update carries no payload and cannot rename; only the registrant
// updates or removes (4.03); an unknown location is 4.04; GET on a
// registration resource is 4.05 (§5.3.3 leaves it to other documents).
func TestRegistrationResourceOperationsAreTheRegistrants(t *testing.T) {
	r := newRig(t, nil)
	loc := r.register(node1, "ep=node1", "</s>")
	cases := []struct {
		name string
		peer netip.AddrPort
		m    *coap.Message
		code coap.Code
	}{
		{"update with payload", node1, msg(coap.POST, loc, "</t>"), coap.BadRequest},
		{"update renaming", node1, msg(coap.POST, loc+"?ep=other", ""), coap.BadRequest},
		{"update by another", node2, msg(coap.POST, loc, ""), coap.Forbidden},
		{"remove by another", node2, msg(coap.DELETE, loc, ""), coap.Forbidden},
		{"unknown location", node1, msg(coap.POST, "/rd/00000000", ""), coap.NotFound},
		{"GET registration", node1, msg(coap.GET, loc, ""), coap.MethodNotAllowed},
		{"PUT /rd", node1, msg(coap.PUT, "/rd?ep=x", ""), coap.MethodNotAllowed},
		{"POST lookup", node1, msg(coap.POST, "/rd-lookup/ep", ""), coap.MethodNotAllowed},
		{"deeper path", node1, msg(coap.GET, "/rd-lookup/ep/x", ""), coap.NotFound},
		{"Block1", node1, msg(coap.POST, "/rd?ep=b", "</x>", coap.Block1, 0), coap.BadOption},
	}
	for _, tc := range cases {
		wantCode(t, tc.name, r.from(context.Background(), tc.peer, tc.m), tc.code)
	}
	if r.next != 0 {
		t.Fatalf("%d of the directory's requests went to the next stage", r.next)
	}
	if got := r.get("/rd-lookup/res"); got != "<coap://[fd00:db8:1::1]/s>" {
		t.Fatalf("the registration changed: %s", got)
	}
}

// §5.3.2: DELETE removes the registration, its links and its route.
func TestRemoveDeletesRegistrationAndRoute(t *testing.T) {
	r := newRig(t, nil)
	loc := r.register(node1, "ep=node1", "</s>")
	if _, ok := r.d.Route("node1"); !ok {
		t.Fatal("no route after registering")
	}
	wantCode(t, "remove", r.from(context.Background(), node1, msg(coap.DELETE, loc, "")), coap.Deleted)
	wantCode(t, "remove again", r.from(context.Background(), node1, msg(coap.DELETE, loc, "")), coap.NotFound)
	if got := r.get("/rd-lookup/ep"); got != "" {
		t.Fatalf("lookup after removal: %q", got)
	}
	if _, ok := r.d.Route("node1"); ok {
		t.Fatal("route after removal")
	}
	if s := r.d.Stats(); s.Removed != 1 || s.Registrations != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// The registration's lifetime is enforced: at its end the registration,
// its links and its route are gone, and its name is free for another.
func TestExpiryRemovesRegistrationAndRoute(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Domain = "rd.test" })
	r.register(node1, "ep=node1&lt=60", "</s>")
	r.register(node2, "ep=node2&lt=120", "</s>")
	if _, ok := r.d.HostRoute("node1.rd.test"); !ok {
		t.Fatal("no host route")
	}
	r.clock.Advance(59 * time.Second)
	if _, ok := r.d.Route("node1"); !ok {
		t.Fatal("route gone before the lifetime ended")
	}
	r.clock.Advance(time.Second)
	if _, ok := r.d.Route("node1"); ok {
		t.Fatal("route still there at the end of the lifetime")
	}
	if _, ok := r.d.HostRoute("node1.rd.test"); ok {
		t.Fatal("host route still there at the end of the lifetime")
	}
	if _, ok := r.d.Route("node2"); !ok {
		t.Fatal("node2's route went with node1's")
	}
	if got := r.get("/rd-lookup/ep"); strings.Contains(got, "node1") || !strings.Contains(got, "node2") {
		t.Fatalf("lookup after node1 expired: %s", got)
	}
	r.register(node2, "ep=node1", "</t>") // the name is free again
	r.clock.Advance(60 * time.Second)
	if s := r.d.Stats(); s.Expired != 2 || s.Registrations != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Bounds: max_registrations (5.03 with Max-Age until the next expiry),
// max_links (4.00), max_bytes (4.13 with Size1).
func TestBoundsOnRegistrations(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxRegistrations = 2; c.MaxLinks = 3; c.MaxBytes = 256 })
	r.register(node1, "ep=a&lt=100", "</1>")
	r.clock.Advance(10 * time.Second)
	r.register(node1, "ep=b&lt=600", "</2>")
	resp := r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=c", "</3>"))
	wantCode(t, "over max_registrations", resp, coap.ServiceUnavailable)
	if age, _ := resp.Options.Uint(coap.MaxAge); age != 90 {
		t.Fatalf("Max-Age %d, want 90 (when a expires)", age)
	}
	r.register(node1, "ep=a", "</1>,</2>,</3>") // a re-registration is no new one
	resp = r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=a", "</1>,</2>,</3>,</4>"))
	wantCode(t, "over max_links", resp, coap.BadRequest)
	resp = r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=a", "</"+strings.Repeat("x", 300)+">"))
	wantCode(t, "over max_bytes", resp, coap.RequestEntityTooLarge)
	if s, _ := resp.Options.Uint(coap.Size1); s != 256 {
		t.Fatalf("Size1 %d", s)
	}
	resp = r.from(context.Background(), node1, msg(coap.POST, "/rd?ep=a&et="+strings.Repeat("y", 250), "</"+strings.Repeat("x", 10)+">"))
	wantCode(t, "attributes count in max_bytes", resp, coap.RequestEntityTooLarge)
}

// max_registrations_per_client: a client holding as many gets 4.03 for a
// new one (counted), not for registering one of its own again; a host's
// /64 counts once, each radio node alone, a DTLS identity once wherever
// it comes from; a removal frees a place.
func TestRegistrationsPerClientAreBounded(t *testing.T) {
	r := newRig(t, func(c *Config) {
		c.MaxRegistrationsPerClient = 2
		c.Registrants = append(c.Registrants, "2001:db8::/32", "psk:tool")
	})
	ctx := context.Background()
	loc := r.register(node1, "ep=a", "</1>")
	r.register(node1, "ep=b", "</2>")
	resp := r.from(ctx, node1, msg(coap.POST, "/rd?ep=c", "</3>"))
	wantCode(t, "node1's third", resp, coap.Forbidden)
	if !strings.Contains(string(resp.Payload), "max_registrations_per_client") {
		t.Fatalf("diagnostic %q", resp.Payload)
	}
	wantCode(t, "node1's third by simple registration", r.from(ctx, node1, msg(coap.POST, "/.well-known/rd?ep=c", "")), coap.Forbidden)
	r.register(node1, "ep=a", "</1>,</4>") // its own again: no new one
	r.register(node2, "ep=n2a", "</1>")    // another node of the radio counts alone
	r.register(node2, "ep=n2b", "</1>")

	host1 := netip.MustParseAddrPort("[2001:db8::9]:5683")
	host2 := netip.MustParseAddrPort("[2001:db8::10]:40000")
	r.register(host1, "ep=h1", "</1>")
	r.register(host2, "ep=h2", "</1>")
	wantCode(t, "a third from the same /64", r.from(ctx, netip.MustParseAddrPort("[2001:db8::11]:5683"), msg(coap.POST, "/rd?ep=h3", "</1>")), coap.Forbidden)

	tool := func(from netip.AddrPort, ep string) *coap.Message {
		return r.as(ctx, &coap.Request{Msg: msg(coap.POST, "/rd?ep="+ep+"&base=coap://[fd00:db8:1::7]", "</1>"), Peer: from, Identity: "psk:tool"})
	}
	wantCode(t, "tool 1", tool(netip.MustParseAddrPort("127.0.0.1:1000"), "t1"), coap.Created)
	wantCode(t, "tool 2", tool(netip.MustParseAddrPort("[2001:db8:5::1]:1000"), "t2"), coap.Created)
	wantCode(t, "tool 3 from elsewhere", tool(netip.MustParseAddrPort("[2001:db8:6::1]:1000"), "t3"), coap.Forbidden)

	if s := r.d.Stats(); s.ClientLimited != 4 || s.Rejected != 4 || s.Registrations != 8 {
		t.Fatalf("stats %+v", s)
	}
	wantCode(t, "remove a", r.from(ctx, node1, msg(coap.DELETE, loc, "")), coap.Deleted)
	r.register(node1, "ep=c", "</3>")
}

// Who may register is an access list: others get 4.03 from the gate,
// before any later stage; lookups are everyone's unless lookups is set.
func TestAccessListsDecideWhoRegistersAndLooksUp(t *testing.T) {
	r := newRig(t, nil)
	resp := r.from(context.Background(), stranger, msg(coap.POST, "/rd?ep=x", "</a>"))
	wantCode(t, "stranger registers", resp, coap.Forbidden)
	if !strings.Contains(string(resp.Payload), "2001:db8::9 is not listed") {
		t.Fatalf("diagnostic %q", resp.Payload)
	}
	wantCode(t, "stranger's simple registration", r.from(context.Background(), stranger, msg(coap.POST, "/.well-known/rd?ep=x", "")), coap.Forbidden)
	wantCode(t, "loopback registers", r.from(context.Background(), netip.MustParseAddrPort("127.0.0.1:9999"), msg(coap.POST, "/rd?ep=lo", "</a>")), coap.Created)
	wantCode(t, "stranger looks up", r.from(context.Background(), stranger, msg(coap.GET, "/rd-lookup/ep", "")), coap.Content)

	r2 := newRig(t, func(c *Config) { c.Lookups = []string{"radio"}; c.Registrants = nil })
	wantCode(t, "no registrants", r2.from(context.Background(), node1, msg(coap.POST, "/rd?ep=x", "</a>")), coap.Forbidden)
	wantCode(t, "stranger looks up", r2.from(context.Background(), stranger, msg(coap.GET, "/rd-lookup/res", "")), coap.Forbidden)
	wantCode(t, "node looks up", r2.from(context.Background(), node1, msg(coap.GET, "/rd-lookup/res", "")), coap.Content)

	// The gate alone refuses before the next stage (the Observe hub).
	next := 0
	gate := r2.d.Gate(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error { next++; return nil }))
	w := &recorder{}
	gate.ServeCoAP(context.Background(), w, &coap.Request{Msg: msg(coap.GET, "/rd-lookup/ep", "", coap.Observe, 0), Peer: stranger})
	if w.resp == nil || w.resp.Code != coap.Forbidden || next != 0 {
		t.Fatalf("gate: %v, next %d", w.resp, next)
	}
}

// A registration that would become a route by a name the gateway uses
// itself (its own resources, a [[route]]) gets 4.03; with routes off, or
// "ask" without proxy=yes, the name is only a name.
func TestReservedNamesAreNoRoutes(t *testing.T) {
	reserved := func(n string) bool { return n == "configured" }
	r := newRig(t, nil, WithReserved(reserved))
	for _, ep := range []string{"rd", "rd-lookup", ".well-known", "configured"} {
		wantCode(t, ep, r.from(context.Background(), node1, msg(coap.POST, "/rd?ep="+ep, "</a>")), coap.Forbidden)
	}
	off := newRig(t, func(c *Config) { c.Routes = RoutesOff }, WithReserved(reserved))
	off.register(node1, "ep=configured", "</a>")
	if _, ok := off.d.Route("configured"); ok {
		t.Fatal("a route with routes off")
	}
	ask := newRig(t, func(c *Config) { c.Routes = RoutesAsk }, WithReserved(reserved))
	ask.register(node1, "ep=configured", "</a>")
	ask.register(node2, "ep=plain", "</a>")
	ask.register(node1, "ep=asked&proxy=yes", "</a>")
	wantCode(t, "asks for a reserved route", ask.from(context.Background(), node2, msg(coap.POST, "/rd?ep=rd&proxy=yes", "</a>")), coap.Forbidden)
	if _, ok := ask.d.Route("plain"); ok {
		t.Fatal(`routes "ask": a route without proxy=yes`)
	}
	if u, ok := ask.d.Route("asked"); !ok || u.Host != "fd00:db8:1::1" || u.Port != 5683 {
		t.Fatalf(`routes "ask": proxy=yes gives %v %v`, u, ok)
	}
}

// Routes go to coap bases only: another scheme is listed, not routed. A
// name that is no DNS label has a path route and no host route.
func TestRoutesAreCoapBasesAndHostRoutesDNSLabels(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Domain = "rd.test" })
	r.register(node1, "ep=web&base=http://[fd00:db8:1::1]", "</a>")
	r.register(node1, "ep=Mixed_Case", "</a>")
	r.register(node2, "ep=Kitchen", "</a>")
	if _, ok := r.d.Route("web"); ok {
		t.Fatal("an http base routed")
	}
	if _, ok := r.d.Route("Mixed_Case"); !ok {
		t.Fatal("no path route")
	}
	if _, ok := r.d.HostRoute("mixed_case.rd.test"); ok {
		t.Fatal("a host route for a name that is no DNS label")
	}
	if u, ok := r.d.HostRoute("kitchen.rd.test"); !ok || u.Host != "fd00:db8:1::2" {
		t.Fatalf("host route %v %v", u, ok)
	}
	eps := r.d.Endpoints()
	if len(eps) != 3 || eps[0].Name != "Kitchen" || eps[0].Host != "kitchen.rd.test" || eps[0].Route != "/Kitchen" {
		t.Fatalf("endpoints %+v", eps)
	}
}
