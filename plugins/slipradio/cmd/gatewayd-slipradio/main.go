// Command gatewayd-slipradio is the gatewayd radio plugin for Contiki-NG
// slip-radio devices. gatewayd starts it; it is not run by hand.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/opaque-edge/gatewayd/plugins/sdk"
	"github.com/opaque-edge/gatewayd/plugins/slipradio"
)

func main() {
	sdk.Serve(sdk.ServeOpts{Init: func(_ context.Context, name string, config []byte) (*sdk.Plugin, error) {
		cfg, tx, err := slipradio.ParseConfig(config)
		if err != nil {
			return nil, err
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", name)
		return &sdk.Plugin{Radio: slipradio.Open(cfg, tx, log)}, nil
	}})
}
