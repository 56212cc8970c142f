package bridge

import (
	"context"
	"net/netip"
	"strconv"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// Forwarded requests are served on the listener's reader goroutine and
// answered from the upstream's (coap.Inline, coap.Later); what may block
// is not: an Observe registration waits for the hub's first response, and
// a name to resolve goes to a goroutine of its own. Answers are the same
// either way.
func TestForwardedRequestsAreServedInline(t *testing.T) {
	o := newRecorder(t, content("x"))
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{o.addr.Addr()}, nil
	}
	p := startProxy(t, nil)
	c := client(t)
	inline := func() uint64 { return p.servers[0].Stats().Inline }
	uri := "coap://" + o.addr.String() + "/x"

	req := &coap.Message{Code: coap.GET, Options: proxyURI(uri)}
	resp := do(t, c, p, req)
	in, out := o.last(t)
	mustVerify(t, req, in, out, resp)
	if inline() != 1 {
		t.Fatalf("inline = %d after a forwarded GET, want 1", inline())
	}
	// PUT too (the cache invalidates on its answer).
	put := &coap.Message{Code: coap.PUT, Options: proxyURI(uri), Payload: []byte("v")}
	if resp := do(t, c, p, put); resp.Code != coap.Content {
		t.Fatalf("PUT: %v", resp.Code)
	}
	if inline() != 2 {
		t.Fatalf("inline = %d after a forwarded PUT, want 2", inline())
	}

	// Not inline: a request for the proxy itself, and a registration.
	wk := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))}
	if resp := do(t, c, p, wk); resp.Code != coap.Content {
		t.Fatalf("/.well-known/core: %v", resp.Code)
	}
	obs := &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+o.addr.String()+"/y").SetUint(coap.Observe, 0)}
	if resp := do(t, c, p, obs); resp.Code != coap.Content {
		t.Fatalf("registration: %v", resp.Code)
	}
	if inline() != 2 {
		t.Fatalf("inline = %d, want 2: a local request or a registration ran on the reader", inline())
	}

	// A name to resolve: served inline, resolved on a goroutine of its own.
	named := &coap.Message{Code: coap.GET, Options: proxyURI("coap://origin.example:" + strconv.Itoa(int(o.addr.Port())) + "/z")}
	if resp := do(t, c, p, named); resp.Code != coap.Content || string(resp.Payload) != "x" {
		t.Fatalf("named target: %v %q", resp.Code, resp.Payload)
	}
	if in, _ := o.last(t); in.Options.Has(coap.ProxyURI) {
		t.Fatal("Proxy-Uri was forwarded")
	}
}
