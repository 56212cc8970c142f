// Package bridgetest starts gatewayd's proxy for the tests of other
// packages (the command-line tool, the end-to-end threat tests).
package bridgetest

import (
	"context"
	"testing"

	"github.com/opaque-edge/gatewayd/bridge"
)

// Start runs the proxy with the defaults and one UDP listener on a free
// loopback port, after mod (if not nil) has adjusted the config; the proxy
// closes when the test ends. Its listener is Addrs()[0]. opts go to
// bridge.New.
func Start(t testing.TB, mod func(*bridge.Config), opts ...bridge.Option) *bridge.Proxy {
	t.Helper()
	cfg := bridge.Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := bridge.New(context.Background(), cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
