package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"os/exec"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/observetest"
	"github.com/opaque-edge/gatewayd/plugins"
)

// hubChain is gatewayd's chain as far as the up direction goes: the
// Observe hub, then a route stage to origin (observetest.Route).
func hubChain(t *testing.T, origin *observable) (*observe.Hub, coap.Handler) {
	t.Helper()
	c := newChain(t, origin.addr)
	hub := observe.New(observe.Defaults())
	t.Cleanup(func() { hub.Close() })
	route := observetest.Route(c.ep, origin.addr)
	return hub, hub.Stage(route)
}

// TestPluginPublishesWhatTheHostsObservationNotifies runs the real
// gatewayd-mqtt executable under the plugin host: its up mapping observes
// through Host.Observe and gatewayd's Observe hub, not by polling.
func TestPluginPublishesWhatTheHostsObservationNotifies(t *testing.T) {
	need(t, "mosquitto", "mosquitto_sub")
	bin, sum := testpeer.BuildPlugin(t, "./cmd/gatewayd-mqtt")

	br := startBroker(t)
	origin := newObservable(t, blob(0))
	hub, chain := hubChain(t, origin)
	const topic = "gw/test/up/plugin"
	// A live subscriber; the first representation is retained, so it
	// arrives whether the subscription or the plugin's publication is
	// first.
	sub := exec.Command("mosquitto_sub", "-V", "mqttv5", "-p", itoa(br.Port), "-h", "127.0.0.1",
		"-q", "1", "-t", topic, "-F", "%x", "-C", "4", "-W", "30")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Process.Kill(); _ = sub.Wait() })
	lines := bufio.NewScanner(stdout)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h, err := plugins.New(ctx, []plugins.Config{{
		Name: "mqtt", Path: bin, SHA256: sum,
		Config: map[string]any{
			"broker": br.URL(), "client_id": "gw-test-plugin",
			"up": []map[string]any{{"observe": "coap://[fd00::1]/sensors/temp", "topic": topic, "retain": true}},
		},
	}}, chain, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// Each representation is pushed once the previous one reached the
	// subscriber, so none is skipped as stale.
	for i := uint32(0); i < 4; i++ {
		if i > 0 {
			if n := origin.notify(blob(i)); n != 1 {
				t.Fatalf("origin has %d observers, want the hub's one", n)
			}
		}
		if !lines.Scan() {
			t.Fatalf("subscriber ended before representation %d: %v", i, lines.Err())
		}
		got, _ := hex.DecodeString(lines.Text())
		if !bytes.Equal(got, blob(i)) {
			t.Fatalf("representation %d: %x, want %x", i, got, blob(i))
		}
	}
	if s := hub.Stats(); s.Observers != 1 || s.Upstreams != 1 {
		t.Errorf("hub %+v, want the plugin as its one observer", s)
	}
	if s := h.Stats()[0]; s.Observes != 1 {
		t.Errorf("plugin made %d Observe callbacks, want 1", s.Observes)
	}
	// Stopping the plugin ends its stream; Close returns after the
	// observer was deregistered.
	h.Close()
	if s := hub.Stats(); s.Observers != 0 || s.Upstreams != 0 {
		t.Errorf("after the plugin stopped the hub keeps %+v", s)
	}
}
