package e2e

import (
	"bytes"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/bridge/bridgetest"
	"github.com/opaque-edge/gatewayd/coap"
)

// The honest proxy: the real gatewayd chain (bridge.New) between the
// endpoints. It splits Proxy-Uri (PR1.1) and forwards responses unmodified
// (PR1.3); end-to-end protection survives it.

func startBridge(t *testing.T) *bridge.Proxy {
	t.Helper()
	return bridgetest.Start(t, func(c *bridge.Config) { c.Proxy.Name = "gw-e2e" })
}

func TestHonestProxyPassesOSCOREIntact(t *testing.T) {
	c, s := oscorePair(t, secret(3), []byte{0xc3}, 0)
	srv := newOSCOREServer(t, s)
	p := startBridge(t)
	client := newOSCOREClient(t, c)
	for _, path := range []string{"alarm_status", "valve_42"} {
		req := &coap.Message{Code: coap.GET}
		req.Options = req.Options.Insert(coap.ProxyURI, []byte("coap://"+srv.addr.String()+"/"+path))
		resp, _, err := client.do(timeout(t, 5*time.Second), p.Addrs()[0], req)
		if err != nil {
			t.Fatalf("%s through gatewayd: %v", path, err)
		}
		if string(resp.Payload) != "GET "+path {
			t.Fatalf("server saw %q", resp.Payload)
		}
		if v := srv.nextOK(t); v.ex.Context() != s {
			t.Fatal("wrong context")
		}
	}
}

func TestHonestProxyPassesSignedRepresentationToTwoClients(t *testing.T) {
	s := newSigner(t, "node7")
	o := newSigOrigin(t, s)
	o.set("temp", 0, "21.5")
	p := startBridge(t)
	uri := "coap://" + o.addr.String() + "/temp"
	var reps [][]byte
	for i := range 2 {
		c, _ := endpoint(t, nil)
		req := &coap.Message{Code: coap.GET}
		req.Options = req.Options.Insert(coap.ProxyURI, []byte(uri))
		resp, err := c.Do(timeout(t, 5*time.Second), p.Addrs()[0], req)
		if err != nil {
			t.Fatal(err)
		}
		// Each client has its own verifier, as separate devices do.
		payload, meta, err := verifierFor(t, s).Verify(resp.Payload, expectURI(uri))
		if err != nil || string(payload) != "21.5" {
			t.Fatalf("client %d: %q, %v", i, payload, err)
		}
		if cf, _ := resp.Options.Uint(coap.ContentFormat); cf != 18 || meta.URI != uri {
			t.Fatalf("client %d: Content-Format %d, signed for %q", i, cf, meta.URI)
		}
		reps = append(reps, resp.Payload)
	}
	if bytes.Equal(reps[0], reps[1]) {
		// Without a cache in the chain yet, each GET reaches the origin
		// and gets its own signature; with one, the bytes are shared.
		t.Log("both clients got the same representation bytes (served from a cache)")
	}
}
