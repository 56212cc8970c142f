package bridge

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// libcoap's client (Debian's 4.3.1) against a proxy that verifies nobody
// by address: a 1,000-byte representation it asks for through the proxy
// is first a 4.01 with Echo, which it repeats its request with (RFC 9175
// §2.3) and then gets whole (1,000 bytes: libcoap takes no datagram over
// 1,152); /.well-known/core with 200 routes comes as a
// first small block with an Echo value, which libcoap echoes with its
// next block request, and the blocks make the whole listing.
func TestLibcoapAnswersTheEchoChallenge(t *testing.T) {
	origin, uri := bigOrigin(t, 1000)
	p := startProxy(t, func(c *Config) {
		unverified(c)
		for i := range 200 {
			c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("room-%03d", i), Target: "coap://127.0.0.1:9/"})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	proxy := "coap://" + p.Addrs()[0].String()

	c := testpeer.StartLibcoap(ctx, t, 1, "-m", "get", "-P", proxy, uri)
	if err := c.Wait(); err != nil {
		t.Fatalf("coap-client: %v\n%s", err, c.Log())
	}
	_, want := origin.last(t)
	if c.Payloads() != string(want.Payload) {
		t.Fatalf("coap-client got %d bytes, want the origin's %d\n%s", len(c.Payloads()), len(want.Payload), c.Log())
	}
	if !strings.Contains(c.Log(), "c:4.01") || !strings.Contains(c.Log(), "Echo:") {
		t.Fatalf("the client's log shows no 4.01 with Echo: was it verified already?\n%s", c.Log())
	}
	if st := p.amp.Stats(); st.Challenges != 1 || st.EchoVerified != 1 {
		t.Fatalf("stats %+v, want one challenge, answered", st)
	}

	// Another address: the listing.
	c = testpeer.StartLibcoap(ctx, t, 2, "-m", "get", proxy+"/.well-known/core")
	if err := c.Wait(); err != nil {
		t.Fatalf("coap-client: %v\n%s", err, c.Log())
	}
	var links []string
	for i := range 200 {
		links = append(links, fmt.Sprintf(`</room-%03d>;title="route"`, i))
	}
	if got := c.Payloads(); got != strings.Join(links, ",") {
		t.Fatalf("coap-client put together %d bytes of /.well-known/core, want %d\n%s", len(got), len(strings.Join(links, ",")), c.Log())
	}
	if !p.amp.has(netip.MustParseAddr(testpeer.ClientAddr(2))) {
		t.Fatalf("libcoap did not echo the Echo value of the first block\n%s", c.Log())
	}
}

// node-coap 1.5 does not know Echo (RFC 9175): from an unverified address
// a large forwarded representation stays a 4.01 for it, with the Echo
// option it does not repeat. The gateway's own listing still reaches it,
// in blocks within the limit, which node-coap follows.
func TestNodeCoapWithoutEchoGetsTheChallengeAndTheListingInBlocks(t *testing.T) {
	_, uri := bigOrigin(t, 3000)
	p := startProxy(t, func(c *Config) {
		unverified(c)
		for i := range 50 {
			c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("room-%03d", i), Target: "coap://127.0.0.1:9/"})
		}
	})
	req := toProxy(p)
	req.ProxyURI = uri
	resp := testpeer.NodeCoap(nodeCtx(t), t, req)
	if _, ok := resp.Option("Echo"); resp.Code != "4.01" || !ok && !hasOptionNumber(resp, 252) {
		t.Fatalf("node-coap got %s %v, want 4.01 with the Echo option", resp.Code, resp.Options)
	}
	req = toProxy(p)
	req.Pathname = "/.well-known/core"
	resp = testpeer.NodeCoap(nodeCtx(t), t, req)
	var links []string
	for i := range 50 {
		links = append(links, fmt.Sprintf(`</room-%03d>;title="route"`, i))
	}
	if resp.Code != "2.05" || string(resp.Payload) != strings.Join(links, ",") {
		t.Fatalf("node-coap got %s with %d bytes, want the %d-byte listing", resp.Code, len(resp.Payload), len(strings.Join(links, ",")))
	}
	if st := p.amp.Stats(); st.Blocks == 0 || st.EchoVerified != 0 {
		t.Fatalf("stats %+v: want the listing in blocks within the limit, and nobody verified", st)
	}
}

// hasOptionNumber reports an option node-coap names by its number, as it
// does for the ones it does not know.
func hasOptionNumber(r testpeer.NodeCoapResponse, n int) bool {
	_, ok := r.Option(fmt.Sprint(n))
	return ok
}
