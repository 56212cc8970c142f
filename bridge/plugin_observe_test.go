package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/plugins"
)

// A plugin's observations are bounded by its max_observations, which the
// proxy hands to the Observe hub in place of max_per_client: with
// max_per_client 1 and max_observations 2, two of the MQTT bridge's three
// up mappings observe and the third is refused. (Its broker is down; the
// up mappings observe regardless.)
func TestPluginObservationsAreBoundByMaxObservations(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "../plugins/mqtt/cmd/gatewayd-mqtt")

	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := coap.NewEndpoint(u, coap.EndpointConfig{Handler: &observableOrigin{}})
	t.Cleanup(func() { origin.Close() })
	var ups []map[string]any
	for _, r := range []string{"a", "b", "c"} {
		ups = append(ups, map[string]any{"observe": fmt.Sprintf("coap://%s/%s", u.LocalAddr(), r), "topic": "gw/test/up/" + r})
	}
	p := startProxy(t, func(c *Config) {
		c.Observe.MaxPerClient = 1
		c.Plugin = []plugins.Config{{
			Name: "mqtt", Path: bin, SHA256: sum, MaxObservations: 2,
			Config: map[string]any{"broker": "mqtt://127.0.0.1:1", "client_id": "gw-test-bound", "up": ups},
		}}
	})
	testutil.EventuallyWithin(t, 20*time.Second, "the plugin's 2 observers and the third refused", func() bool {
		s := p.Hub().Stats()
		if s.Observers > 2 {
			t.Fatalf("hub %+v: want the plugin's 2 observers and the third refused", s)
		}
		return s.Observers == 2 && s.OverLimit >= 1
	})
}
