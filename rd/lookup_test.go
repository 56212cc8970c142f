package rd

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

// lookupRig has three endpoints: a temperature sensor and a light in
// sector floor1 (et=sensor and et=actuator), a sensor in floor2.
func lookupRig(t *testing.T) *rig {
	r := newRig(t, nil)
	r.register(node1, "ep=temp1&d=floor1&et=sensor", `</sensors/temp>;rt="temperature-c";if=sensor;ct=0,</sensors/hum>;rt=humidity;ct="0 60"`)
	r.register(node2, "ep=light&d=floor1&et=actuator", `</light>;rt="light-lux core.s";obs,<coap://other.example/x>;title="Sensor Index"`)
	r.register(node3, "ep=temp2&d=floor2&et=sensor", `</t>;rt="temperature-f"`)
	return r
}

// §6.2: criteria match link attributes and endpoint attributes, all of
// them must match; relation types and ct match any one of their values;
// a trailing "*" matches by prefix; href matches the resolved target, or
// on endpoint lookup the registration resource. An endpoint matches a
// criterion one of its links matches, and a link one its endpoint
// matches.
func TestLookupFilters(t *testing.T) {
	r := lookupRig(t)
	n1, n2, n3 := "coap://[fd00:db8:1::1]", "coap://[fd00:db8:1::2]", "coap://[fd00:db8:1::3]"
	for _, tc := range []struct {
		path string
		want []string // targets, in order
	}{
		{"/rd-lookup/res", []string{n2 + "/light", "coap://other.example/x", n1 + "/sensors/temp", n1 + "/sensors/hum", n3 + "/t"}},
		{"/rd-lookup/res?rt=temperature-c", []string{n1 + "/sensors/temp"}},
		{"/rd-lookup/res?rt=temperature*", []string{n1 + "/sensors/temp", n3 + "/t"}},
		{"/rd-lookup/res?rt=core.s", []string{n2 + "/light"}},
		{"/rd-lookup/res?ct=60", []string{n1 + "/sensors/hum"}},
		{"/rd-lookup/res?obs", []string{n2 + "/light"}},
		{"/rd-lookup/res?title=Sensor%20Index", nil},
		{"/rd-lookup/res?title=Sensor Index", []string{"coap://other.example/x"}},
		{"/rd-lookup/res?title=Sensor", nil},
		{"/rd-lookup/res?ep=temp1", []string{n1 + "/sensors/temp", n1 + "/sensors/hum"}},
		{"/rd-lookup/res?et=sensor&rt=humidity", []string{n1 + "/sensors/hum"}},
		{"/rd-lookup/res?d=floor1&ct=0", []string{n1 + "/sensors/temp", n1 + "/sensors/hum"}},
		{"/rd-lookup/res?href=" + n3 + "/t", []string{n3 + "/t"}},
		{"/rd-lookup/res?href=" + n1 + "/*", []string{n1 + "/sensors/temp", n1 + "/sensors/hum"}},
		{"/rd-lookup/res?rt=nothing", nil},
		{"/rd-lookup/ep", []string{"light", "temp1", "temp2"}},
		{"/rd-lookup/ep?et=sensor", []string{"temp1", "temp2"}},
		{"/rd-lookup/ep?rt=temperature*", []string{"temp1", "temp2"}},
		{"/rd-lookup/ep?rt=core.rd-ep", []string{"light", "temp1", "temp2"}},
		{"/rd-lookup/ep?d=floor1&rt=light-lux", []string{"light"}},
		{"/rd-lookup/ep?ep=temp*", []string{"temp1", "temp2"}},
		{"/rd-lookup/ep?base=" + n3, []string{"temp2"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got := names(t, r.get(tc.path), strings.HasPrefix(tc.path, "/rd-lookup/ep"))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	// An endpoint's href is its registration resource.
	loc := r.d.Endpoints()[0].Location
	if got := names(t, r.get("/rd-lookup/ep?href="+loc), true); len(got) != 1 || got[0] != "light" {
		t.Fatalf("href=%s: %q", loc, got)
	}
}

// names are the targets of a lookup's links, or for an endpoint lookup
// their ep values.
func names(t *testing.T, doc string, eps bool) []string {
	t.Helper()
	links, err := ParseLinks(doc, 1000)
	if err != nil {
		t.Fatalf("lookup answer %q: %v", doc, err)
	}
	var out []string
	for _, l := range links {
		if !eps {
			out = append(out, l.Target)
			continue
		}
		ep, _ := l.Get("ep")
		out = append(out, ep)
	}
	return out
}

// §6.2: page and count give links in pages of count from page zero; count
// alone is the first page; page without count is a 4.00.
func TestLookupPaging(t *testing.T) {
	r := newRig(t, nil)
	var doc []string
	for i := range 7 {
		doc = append(doc, fmt.Sprintf("</res/%d>;ct=60", i))
	}
	r.register(node1, "ep=many", strings.Join(doc, ","))
	page := func(q string) []string {
		var out []string
		for _, n := range names(t, r.get("/rd-lookup/res?"+q), false) {
			out = append(out, strings.TrimPrefix(n, "coap://[fd00:db8:1::1]/res/"))
		}
		return out
	}
	for q, want := range map[string]string{
		"page=0&count=3":                   "[0 1 2]",
		"page=1&count=3":                   "[3 4 5]",
		"page=2&count=3":                   "[6]",
		"page=3&count=3":                   "[]",
		"count=2":                          "[0 1]",
		"count=0":                          "[]",
		"count=100":                        "[0 1 2 3 4 5 6]",
		"page=2147483647&count=2147483647": "[]",
		"ct=60&page=1&count=4":             "[4 5 6]",
	} {
		if got := fmt.Sprint(page(q)); got != want {
			t.Errorf("%s: %s, want %s", q, got, want)
		}
	}
	for _, q := range []string{"page=1", "count=x", "count=-1", "page=1&count=+2"} {
		wantCode(t, q, r.from(context.Background(), node1, msg(coap.GET, "/rd-lookup/res?"+q, "")), coap.BadRequest)
	}
	wantCode(t, "Accept: CBOR", r.from(context.Background(), node1, msg(coap.GET, "/rd-lookup/res", "", coap.Accept, 60)), coap.NotAcceptable)
	r.get("/rd-lookup/ep?count=1")
	if s := r.d.Stats(); s.Lookups < 9 {
		t.Fatalf("lookups counted: %d", s.Lookups)
	}
}

// §6.2: an observed lookup gets a notification whenever the set of
// matching links changes, an empty answer included, and none when a
// change leaves its answer as it was; the Observe numbers grow. The
// hub's cancel ends it.
func TestObservedLookupNotifiesWhenItsAnswerChanges(t *testing.T) {
	r := newRig(t, nil)
	u := &coaptest.Observer{}
	first := r.as(context.Background(), &coap.Request{Msg: msg(coap.GET, "/rd-lookup/ep?et=sensor", "", coap.Observe, 0), Peer: node1, Observer: u})
	wantCode(t, "observe", first, coap.Content)
	seq0, ok := first.Options.Uint(coap.Observe)
	if !ok || len(first.Payload) != 0 || u.Starts() == 0 {
		t.Fatalf("first answer %v %q, started %v", first.Options, first.Payload, u.Starts() > 0)
	}
	loc := r.register(node1, "ep=s1&et=sensor&lt=60", "</t>")
	r.register(node2, "ep=other", "</t>") // no sensor: no notification
	wantCode(t, "refresh", r.from(context.Background(), node1, msg(coap.POST, loc, "")), coap.Changed)
	r.clock.Advance(60e9) // s1 expires
	notes := u.Notifications()
	if len(notes) != 2 {
		t.Fatalf("%d notifications, want 2 (s1 came, s1 went): %v", len(notes), notes)
	}
	if !strings.Contains(string(notes[0].Payload), "ep=s1") || len(notes[1].Payload) != 0 {
		t.Fatalf("notifications %q, %q", notes[0].Payload, notes[1].Payload)
	}
	prev := seq0
	for _, n := range notes {
		seq, _ := n.Options.Uint(coap.Observe)
		if cf, _ := n.Options.Uint(coap.ContentFormat); n.Code != coap.Content || cf != cfLinkFormat || seq <= prev {
			t.Fatalf("notification %v %v after %d", n.Code, n.Options, prev)
		}
		prev = seq
	}
	if s := r.d.Stats(); s.Observations != 1 || s.Notifications != 2 {
		t.Fatalf("stats %+v", s)
	}
	u.Cancel(context.Background())
	r.register(node1, "ep=s2&et=sensor", "</t>")
	if n := len(u.Notifications()); n != 2 || r.d.Stats().Observations != 0 {
		t.Fatalf("after cancel: %d notifications, %d observations", n, r.d.Stats().Observations)
	}
	// Without a hub's Observer a lookup with Observe is a plain answer.
	plain := r.from(context.Background(), node1, msg(coap.GET, "/rd-lookup/ep", "", coap.Observe, 0))
	if plain.Options.Has(coap.Observe) {
		t.Fatal("Observe without an Upstream")
	}
}
