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

	"github.com/opaque-edge/gatewayd/plugins/mqtt"
	"github.com/opaque-edge/gatewayd/plugins/sdk"
)

func main() { sdk.Serve(sdk.ServeOpts{Init: newPlugin}) }

func newPlugin(_ context.Context, name string, raw []byte) (*sdk.Plugin, error) {
	var c mqtt.Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("gatewayd-mqtt: config of %s: %w", name, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &sdk.Plugin{FrontEnd: &frontEnd{cfg: c}}, nil
}

type frontEnd struct{ cfg mqtt.Config }

// Run bridges until gatewayd stops the plugin: up mappings observe through
// the host's Observe hub (sdk.Host.Observe), down mappings PUT through
// Host.Do.
func (f *frontEnd) Run(ctx context.Context, host sdk.Host) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", "mqtt")
	b, err := mqtt.New(f.cfg, host.Do, mqtt.ObserveURI(host.Observe), log)
	if err != nil {
		return err
	}
	return b.Run(ctx)
}
