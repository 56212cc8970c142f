package bridge

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/rd"
)

// startRDProxy runs a proxy with the resource directory on, its state in
// a temporary directory.
func startRDProxy(t *testing.T, mod func(*Config), opts ...Option) *Proxy {
	t.Helper()
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Proxy.Timeout = Duration{5 * time.Second}
	cfg.Proxy.Name = "gw-test"
	cfg.RD.Enabled = true
	cfg.RD.StateDir = t.TempDir()
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// req builds a request for path ("/rd?ep=x"), with a payload.
func req(code coap.Code, path, payload string) *coap.Message {
	m := &coap.Message{Code: code}
	if payload != "" {
		m.Payload = []byte(payload)
	}
	p, q, _ := strings.Cut(path, "?")
	for _, s := range strings.Split(strings.Trim(p, "/"), "/") {
		if s != "" {
			m.Options = m.Options.Insert(coap.URIPath, []byte(s))
		}
	}
	if q != "" {
		for _, s := range strings.Split(q, "&") {
			m.Options = m.Options.Insert(coap.URIQuery, []byte(s))
		}
	}
	return m
}

func wantRD(t *testing.T, what string, resp *coap.Message, code coap.Code) {
	t.Helper()
	if resp.Code != code {
		t.Fatalf("%s: %v %q, want %v", what, resp.Code, resp.Payload, code)
	}
}

// libcoap's coap-client registers with the directory (POST /rd with a
// link-format payload, -t 40) and looks up what it registered, filtered;
// the registered name is then a reverse route to the registrant's base.
func TestRDLibcoapRegistersLooksUpAndIsRoutedByName(t *testing.T) {
	o := newRecorder(t, content("21.5"))
	p := startRDProxy(t, nil)
	gw := "coap://" + p.Addrs()[0].String()
	out := libcoapClient(t, "coap-client-notls", "-m", "post", "-t", "40",
		"-e", `</sensors/temp>;rt="temperature";ct=0,</sensors/hum>;rt="humidity"`,
		gw+"/rd?ep=node1&lt=60&base=coap://"+o.addr.String())
	if strings.Contains(out, "4.") || strings.Contains(out, "5.") {
		t.Fatalf("registration: %q", out)
	}
	eps := p.RD().Endpoints()
	if len(eps) != 1 || eps[0].Name != "node1" || eps[0].Lifetime != 60 || eps[0].Route != "/node1" {
		t.Fatalf("registered: %+v (coap-client said %q)", eps, out)
	}
	out = libcoapClient(t, "coap-client-notls", "-m", "get", "-A", "40", gw+"/rd-lookup/res?rt=temperature")
	if want := "<coap://" + o.addr.String() + "/sensors/temp>;rt=temperature;ct=0"; strings.TrimSpace(out) != want {
		t.Fatalf("lookup: %q, want %q", out, want)
	}
	out = libcoapClient(t, "coap-client-notls", "-m", "get", gw+"/rd-lookup/ep?ep=node1")
	if !strings.Contains(out, ";ep=node1;") || !strings.Contains(out, `base="coap://`+o.addr.String()+`"`) {
		t.Fatalf("endpoint lookup: %q", out)
	}
	out = libcoapClient(t, "coap-client-notls", "-m", "get", gw+"/node1/sensors/temp")
	if strings.TrimSpace(out) != "21.5" {
		t.Fatalf("GET by the registered name: %q", out)
	}
	in, _ := o.last(t)
	if got := coap.URIFromOptions(in.Options, "coap", "", 0); strings.Join(got.Path, "/") != "sensors/temp" {
		t.Fatalf("the origin was asked for %v", got.Path)
	}
}

// An observed lookup goes through the Observe hub like any observation:
// libcoap's observer sees an endpoint come, and gets a notification when
// it goes (RFC 9176 §6.2).
func TestRDObservedLookupWatchesEndpointsComeAndGo(t *testing.T) {
	p := startRDProxy(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	obs := testpeer.StartLibcoap(ctx, t, 1, "-s", "40", "-m", "get", "coap://"+p.Addrs()[0].String()+"/rd-lookup/ep?et=sensor")
	defer obs.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("the observer's log:\n%s", obs.Log())
		}
	}()
	testutil.EventuallyWithin(t, 20*time.Second, "the lookup observed", func() bool { return p.RD().Stats().Observations >= 1 })
	c := client(t)
	resp := do(t, c, p, req(coap.POST, "/rd?ep=watched&et=sensor", "</t>"))
	wantRD(t, "register", resp, coap.Created)
	var loc string
	for v := range resp.Options.All(coap.LocationPath) {
		loc += "/" + string(v)
	}
	testutil.EventuallyWithin(t, 20*time.Second, "the observer to see the endpoint come", func() bool { return strings.Contains(obs.Payloads(), "ep=watched") })
	sent := p.Hub().Stats().NotificationsOut
	wantRD(t, "remove", do(t, c, p, req(coap.DELETE, loc, "")), coap.Deleted)
	testutil.EventuallyWithin(t, 20*time.Second, "a notification when the endpoint went", func() bool { return p.Hub().Stats().NotificationsOut > sent })
	if s := p.RD().Stats(); s.Notifications != 2 || s.Observations != 1 {
		t.Fatalf("rd %+v", s)
	}
}

// With a domain, Uri-Host "<ep>.<domain>" routes to the endpoint whatever
// the path (/rd too, which the directory would otherwise serve), with
// every option as it came; an OSCORE request (RFC 8613 Appendix C.4)
// passes so, its protected bytes and options intact (PR1.2, PR1.3).
func TestRDHostRouteForwardsOptionsAndOSCOREUntouched(t *testing.T) {
	o := newRecorder(t, content("x"))
	p := startRDProxy(t, func(c *Config) { c.RD.Domain = "rd.test" })
	c := client(t)
	wantRD(t, "register", do(t, c, p, req(coap.POST, "/rd?ep=Origin1&base=coap://"+o.addr.String(), "</x>")), coap.Created)

	plain := req(coap.GET, "/rd?ep=x", "")
	plain.Options = plain.Options.Insert(coap.URIHost, []byte("ORIGIN1.rd.test"))
	resp := do(t, c, p, plain)
	in, out := o.last(t)
	mustVerify(t, plain, in, out, resp)
	if h, _ := in.Options.Get(coap.URIHost); string(h) != "ORIGIN1.rd.test" {
		t.Fatalf("Uri-Host %q at the origin", h)
	}

	vector, _ := hex.DecodeString("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e")
	var osc coap.Message
	if err := osc.Decode(vector); err != nil {
		t.Fatal(err)
	}
	sent := osc.Clone()
	sent.Options = sent.Options.Set(coap.URIHost, []byte("origin1.rd.test"))
	resp = do(t, c, p, sent)
	in, out = o.last(t)
	mustVerify(t, sent, in, out, resp)
	oscIn, _ := in.Options.Get(coap.OSCORE)
	oscV, _ := osc.Options.Get(coap.OSCORE)
	if !bytes.Equal(oscIn, oscV) || !bytes.Equal(in.Payload, osc.Payload) || o.count() != 2 {
		t.Fatalf("OSCORE option or ciphertext changed on the way, or not forwarded (%d requests)", o.count())
	}
	// Without a registration by that name the host is the gateway's own.
	other := req(coap.GET, "/rd-lookup/ep", "")
	other.Options = other.Options.Insert(coap.URIHost, []byte("nobody.rd.test"))
	wantRD(t, "unregistered host", do(t, c, p, other), coap.Content)
}

// The directory's clock ends a registration, and with it the route: a
// request by that name is then the gateway's own, 4.04.
func TestRDExpiryEndsTheRoute(t *testing.T) {
	o := newRecorder(t, content("x"))
	fake := clocktest.New(time.Now())
	p := startRDProxy(t, nil, withRDOptions(rd.WithClock(fake)))
	c := client(t)
	wantRD(t, "register", do(t, c, p, req(coap.POST, "/rd?ep=short&lt=60&base=coap://"+o.addr.String(), "</x>")), coap.Created)
	wantRD(t, "by name", do(t, c, p, req(coap.GET, "/short/x", "")), coap.Content)
	fake.Advance(60 * time.Second)
	wantRD(t, "after the lifetime", do(t, c, p, req(coap.GET, "/short/x", "")), coap.NotFound)
	if o.count() != 1 {
		t.Fatalf("the origin got %d requests", o.count())
	}
}

// A name the configuration routes, or the broker's collection, is not
// the directory's to route (4.03); /.well-known/core lists the
// directory's interfaces for rt=core.rd* (RFC 9176 §4.3).
func TestRDReservedNamesAndDiscovery(t *testing.T) {
	p := startRDProxy(t, func(c *Config) {
		c.Route = []RouteConfig{{Name: "static", Target: "coap://127.0.0.1:9"}}
		c.PubSub.Enabled = true
		c.PubSub.StateDir = t.TempDir()
	})
	c := client(t)
	for _, ep := range []string{"static", "ps", "rd"} {
		wantRD(t, ep, do(t, c, p, req(coap.POST, "/rd?ep="+ep, "</x>")), coap.Forbidden)
	}
	resp := do(t, c, p, req(coap.GET, "/.well-known/core?rt=core.rd*", ""))
	want := `</rd>;rt="core.rd";ct=40,</rd-lookup/ep>;rt="core.rd-lookup-ep";ct=40;obs,</rd-lookup/res>;rt="core.rd-lookup-res";ct=40;obs`
	if resp.Code != coap.Content || string(resp.Payload) != want {
		t.Fatalf("discovery: %v %s", resp.Code, resp.Payload)
	}
	resp = do(t, c, p, req(coap.GET, "/.well-known/core?rt=core.rd-lookup-ep", ""))
	if string(resp.Payload) != `</rd-lookup/ep>;rt="core.rd-lookup-ep";ct=40;obs` {
		t.Fatalf("discovery of endpoint lookup: %s", resp.Payload)
	}
}

// A node on the simulated radio (a fake RCP driven through the real
// Spinel driver) registers with simple registration (RFC 9176 §5.1): the
// directory GETs its /.well-known/core over the radio, lists its links,
// and routes its name to it.
func TestRDSimpleRegistrationOverTheRadio(t *testing.T) {
	p := startRDProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
	})
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	n, _ := sim.FromLink(r.Link())
	node := n.SimNodes()[1]
	before := node.Requests()
	var resp *coap.Message
	var err error
	// A frame lost on the air or the radio still settling: the node
	// tries again, as it would.
	for range 5 {
		resp, err = node.Endpoint().Do(ctx, r.Conn().LocalAddr(), req(coap.POST, "/.well-known/rd?ep=node2&lt=600", ""))
		if err == nil && resp.Code == coap.Changed {
			break
		}
	}
	if err != nil || resp.Code != coap.Changed {
		t.Fatalf("simple registration: %v %v", resp, err)
	}
	if node.Requests() == before {
		t.Fatal("the node was not asked for its /.well-known/core")
	}
	c := client(t)
	look := do(t, c, p, req(coap.GET, "/rd-lookup/res?ep=node2&rt=temperature-c", ""))
	addr := sim.NodeAddr(sim.DefaultPrefix, 1)
	if want := fmt.Sprintf("<coap://[%v]/sensors/temp>;rt=temperature-c;ct=0;obs", addr); string(look.Payload) != want {
		t.Fatalf("lookup: %q, want %q", look.Payload, want)
	}
	got := do(t, c, p, req(coap.GET, "/node2/sensors/temp", ""))
	if got.Code != coap.Content || len(got.Payload) == 0 {
		t.Fatalf("GET /node2/sensors/temp: %v %q", got.Code, got.Payload)
	}
	eps := p.RD().Endpoints()
	if len(eps) != 1 || eps[0].Addr != addr || !eps[0].Simple {
		t.Fatalf("endpoints: %+v", eps)
	}
	if e := eps[0]; e.From.Addr() != addr || e.Route != "/node2" {
		t.Fatalf("endpoint %+v", e)
	}
	named := false
	for _, n := range p.Snapshot().Nodes {
		if slices.Contains(n.Addrs, addr.String()) {
			named = n.Name == "node2"
		}
	}
	if !named {
		t.Fatalf("the console does not name %v node2: %+v", addr, p.Snapshot().Nodes)
	}
	if st := p.Status(); st.RD == nil || len(st.RD.Endpoints) != 1 || st.RD.Endpoints[0].Name != "node2" || st.RD.Stats.Registered != 1 {
		t.Fatalf("status: %+v", st.RD)
	}
}

// node-coap, an independent CoAP implementation, registers (POST /rd
// with a link-format payload) while two node-coap observers, each on a
// socket of its own, watch the endpoint lookup: the hub holds one
// observation of the directory for both, and both see the endpoint come.
func TestRDNodeCoapRegistersWhileNodeCoapObserversWatch(t *testing.T) {
	p := startRDProxy(t, nil)
	watch := toProxy(p)
	watch.Pathname = "/rd-lookup/ep"
	watch.Observe = 2
	obs := testpeer.StartNodeCoapObservers(nodeCtx(t), t, watch)
	for range 2 {
		if r := obs.Next(t, 20*time.Second); r.Code != "2.05" || r.Observe == nil || len(r.Payload) != 0 {
			t.Fatalf("first answer: %s observe %v %q", r.Code, r.Observe, r.Payload)
		}
	}
	if n := p.RD().Stats().Observations; n != 1 {
		t.Fatalf("%d observations of the directory for two observers of one lookup, want 1", n)
	}
	reg := toProxy(p)
	reg.Method = "POST"
	reg.Pathname = "/rd"
	reg.Options = map[string][]byte{"Uri-Query": []byte("ep=from-node"), "Content-Format": {40}}
	reg.Payload = []byte(`</x>;rt=thing`)
	resp := testpeer.NodeCoap(nodeCtx(t), t, reg)
	if loc, _ := resp.Option("Location-Path"); resp.Code != "2.01" || string(loc) != "rd" {
		t.Fatalf("node-coap registration: %s %v %q", resp.Code, resp.Options, resp.Payload)
	}
	seen := map[int]bool{}
	for len(seen) < 2 {
		r := obs.Next(t, 20*time.Second)
		if !strings.Contains(string(r.Payload), ";ep=from-node;") {
			t.Fatalf("observer %d: %s %q", r.Obs, r.Code, r.Payload)
		}
		seen[r.Obs] = true
	}
	obs.Stop(t, 20*time.Second)
}

// A registration outlives a restart of the proxy on the same state_dir:
// the new proxy lists it and routes its name; and its name stays its
// registrant's, refused to another client (4.03).
func TestRDRegistrationAndRouteSurviveARestart(t *testing.T) {
	o := newRecorder(t, content("x"))
	dir := t.TempDir()
	keep := func(c *Config) { c.RD.StateDir = dir }
	p := startRDProxy(t, keep)
	c := client(t)
	wantRD(t, "register", do(t, c, p, req(coap.POST, "/rd?ep=kept&base=coap://"+o.addr.String(), "</x>;rt=kept")), coap.Created)
	p.Close()

	p = startRDProxy(t, keep)
	look := do(t, c, p, req(coap.GET, "/rd-lookup/res?rt=kept", ""))
	if want := "<coap://" + o.addr.String() + "/x>;rt=kept"; string(look.Payload) != want {
		t.Fatalf("lookup after the restart: %q, want %q", look.Payload, want)
	}
	wantRD(t, "by name after the restart", do(t, c, p, req(coap.GET, "/kept/x", "")), coap.Content)
	if o.count() != 1 {
		t.Fatalf("the origin got %d requests", o.count())
	}
	u, err := coap.ListenUDP(context.Background(), "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	other := coap.NewEndpoint(u, coap.EndpointConfig{})
	defer other.Close()
	wantRD(t, "another client takes the name after the restart", do(t, other, p, req(coap.POST, "/rd?ep=kept", "</y>")), coap.Forbidden)
}
