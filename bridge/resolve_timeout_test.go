package bridge

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// [proxy] timeout "bounds a whole upstream exchange; then 5.04". The
// resolution of a Proxy-Uri host name happens before the timeout is
// applied, on the endpoint's context, so a slow or unreachable resolver
// (an offline gateway) holds the request, its worker and its MaxInflight
// slot until the resolver gives up, whatever the timeout says; and it runs
// before the allow list, for any name a client sends.
func TestProxyTimeoutBoundsHostNameResolution(t *testing.T) {
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
		<-ctx.Done() // a resolver that never answers
		return nil, ctx.Err()
	}
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{500 * time.Millisecond} })
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://slow.example/x")}
	start := time.Now()
	resp, err := c.Do(ctx, p.Addrs()[0], req)
	if err != nil {
		t.Fatalf("no answer %v after the request, with timeout 500ms: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if resp.Code.Class() != 5 {
		t.Fatalf("got %v", resp.Code)
	}
}
