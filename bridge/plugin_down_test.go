package bridge

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// A radio plugin whose file is missing does not stop the start when the
// radio's ext_addr is set (without it the start must wait for the plugin
// to tell the address, and Warnings says so): the proxy serves, and a
// request for a node behind that radio gets 5.03 with Max-Age.
func TestRadioPluginThatCannotStartLeavesTheProxyServing(t *testing.T) {
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Proxy.Allow = append(cfg.Proxy.Allow, sim.DefaultPrefix.String())
	cfg.Plugin = []plugins.Config{{Name: "slip", Path: filepath.Join(t.TempDir(), "gatewayd-slipradio"), SHA256: strings.Repeat("ab", 32)}}
	cfg.Radio = []radio.Config{{Name: "mesh", Driver: "plugin:slip", Prefix: sim.DefaultPrefix,
		UpTimeout: radio.Duration{Duration: 200 * time.Millisecond}}}
	if err := cfg.Radio[0].ExtAddr.UnmarshalText([]byte("18:b4:30:00:00:00:00:01")); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Fatalf("warnings with ext_addr set: %q", w)
	}
	p, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("New with a radio plugin that cannot start: %v", err)
	}
	defer p.Close()
	c := client(t)
	node := sim.DefaultPrefix.Addr().Next()
	resp := do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://[" + node.String() + "]/x")})
	if ma, ok := resp.Options.Uint(coap.MaxAge); resp.Code != coap.ServiceUnavailable || !ok || ma < 1 {
		t.Fatalf("a node behind the radio: %v, Max-Age %d (%v); want 5.03 with Max-Age", resp.Code, ma, ok)
	}

	// Without ext_addr the start waits for the plugin, and gives up.
	cfg.Radio[0].ExtAddr = mac.Addr{}
	if _, err := New(context.Background(), cfg, nil); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("without ext_addr: %v", err)
	}
}
