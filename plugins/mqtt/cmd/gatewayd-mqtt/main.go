// Command gatewayd-mqtt is the gatewayd plugin that bridges CoAP resources
// and MQTT v5 topics (see package plugins/mqtt). It is a front end: it
// sends its requests into gatewayd's chain through the host. gatewayd
// starts it; run by hand it says so and exits.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/mqtt"
	"github.com/opaque-edge/gatewayd/plugins/sdk"
)

func main() { sdk.Serve(sdk.ServeOpts{Init: newPlugin}) }

// config is mqtt.Config plus how often to poll in place of observing.
type config struct {
	mqtt.Config
	// PollMin and PollMax bound the re-GET interval, in seconds, of an
	// up mapping (the SDK's Host offers Do only, no Observe yet).
	PollMin int `json:"poll_min"`
	PollMax int `json:"poll_max"`
}

func newPlugin(_ context.Context, name string, raw []byte) (*sdk.Plugin, error) {
	var c config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("gatewayd-mqtt: config of %s: %w", name, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.PollMin <= 0 {
		c.PollMin = 5
	}
	if c.PollMax < c.PollMin {
		c.PollMax = max(60, c.PollMin)
	}
	return &sdk.Plugin{FrontEnd: &frontEnd{cfg: c}}, nil
}

type frontEnd struct{ cfg config }

// Run bridges until gatewayd stops the plugin.
func (f *frontEnd) Run(ctx context.Context, host sdk.Host) error {
	do := func(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error) {
		return host.Do(ctx, req, secure)
	}
	observe := mqtt.PollObserve(do, time.Duration(f.cfg.PollMin)*time.Second, time.Duration(f.cfg.PollMax)*time.Second)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", "mqtt")
	b, err := mqtt.New(f.cfg.Config, do, observe, log)
	if err != nil {
		return err
	}
	return b.Run(ctx)
}
