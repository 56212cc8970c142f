package bridge

import (
	"bytes"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

// RFC 7252 §5.4.1: a critical option that the target resource does not
// understand is 4.02 on the gateway's own resources as on any server; the
// OSCORE option is one of them, since the gateway has no security context
// (RFC 8613 §8.2). An unknown elective option is ignored.
func TestLocalResourcesRejectUnknownCriticalOptions(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		c.Route = []RouteConfig{{Name: "n", Target: "coap://127.0.0.1:1"}}
		c.PubSub = pubsub.Defaults()
		c.PubSub.Enabled = true
		c.PubSub.StateDir = t.TempDir()
	})
	c := client(t)
	oscore := []byte{0x09, 0x01} // flags with a Partial IV of one byte, then the PIV
	tests := []struct {
		name string
		req  *coap.Message
		want coap.Code
	}{
		{"well-known core, option 65001", &coap.Message{Code: coap.GET, Options: pathOpts(".well-known/core").Insert(65001, []byte{1})}, coap.BadOption},
		{"well-known core, OSCORE", &coap.Message{Code: coap.POST, Options: pathOpts(".well-known/core").Insert(coap.OSCORE, oscore)}, coap.BadOption},
		{"unknown path, OSCORE", &coap.Message{Code: coap.POST, Options: pathOpts("x").Insert(coap.OSCORE, oscore)}, coap.BadOption},
		{"unknown path, option 65001", &coap.Message{Code: coap.GET, Options: pathOpts("x").Insert(65001, nil)}, coap.BadOption},
		{"broker collection, option 65001", &coap.Message{Code: coap.GET, Options: pathOpts("ps").Insert(65001, []byte{1})}, coap.BadOption},
		{"broker collection, OSCORE observe", &coap.Message{Code: coap.FETCH, Options: pathOpts("ps").Insert(coap.Observe, nil).Insert(coap.OSCORE, oscore)}, coap.BadOption},
		{"well-known core, elective 65000", &coap.Message{Code: coap.GET, Options: pathOpts(".well-known/core").Insert(65000, []byte{1})}, coap.Content},
		{"unknown path, elective 65000", &coap.Message{Code: coap.GET, Options: pathOpts("x").Insert(65000, nil)}, coap.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Type = coap.Confirmable
			resp := do(t, c, p, tt.req)
			if resp.Code != tt.want {
				t.Fatalf("got %v %q, want %v", resp.Code, resp.Payload, tt.want)
			}
			if tt.want == coap.Content && !bytes.Contains(resp.Payload, []byte("</n>")) {
				t.Fatalf("listing without the route: %q", resp.Payload)
			}
		})
	}
}
