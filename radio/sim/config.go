package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
)

func init() {
	radio.Register("sim", radio.Driver{
		Open: func(_ context.Context, cfg radio.Config, log *slog.Logger) (radio.Link, error) {
			return NewNetwork(cfg, log)
		},
		Options:  Config{},
		Defaults: defaults,
		Validate: validate,
	})
}

// Defaults of a "sim" radio.
const DefaultNodes = 3

// DefaultPrefix is the prefix of a "sim" radio that names none.
var DefaultPrefix = netip.MustParsePrefix("fd00:db8:1::/64")

// Config is the [radio.sim] table of a "sim" radio, the simulated
// network's own keys; radio.Config.Options holds it.
type Config struct {
	Nodes int            `toml:"nodes"` // simulated CoAP nodes, 1–64, default 3
	Loss  float64        `toml:"loss"`  // probability a reception is lost, 0 ≤ loss < 1
	Delay radio.Duration `toml:"delay"` // air time of a frame, at most 1 s
	// OSCOREDir and SignKey are the simulated nodes' own end-to-end keys,
	// not the proxy's: a directory of server-side OSCORE context files
	// (node1.toml, node2.toml, ... or one nodes.toml all nodes share) and
	// an Ed25519 private key file the nodes sign representations with.
	// They take effect in binaries that link radio/sim/nodekeys.
	OSCOREDir string `toml:"oscore_dir"`
	SignKey   string `toml:"sign_key"`
}

// configOf is the [radio.sim] part of a "sim" radio's config; zero when
// it has none.
func configOf(cfg radio.Config) Config {
	c, _ := cfg.Options.(Config)
	return c
}

func defaults(c radio.Config) radio.Config {
	if !c.Prefix.IsValid() {
		c.Prefix = DefaultPrefix
	}
	s := configOf(c)
	if s.Nodes == 0 {
		s.Nodes = DefaultNodes
	}
	c.Options = s
	return c
}

func validate(c radio.Config) error {
	s := configOf(c)
	switch {
	case s.Nodes < 1 || s.Nodes > 64:
		return fmt.Errorf("sim.nodes = %d: want 1 to 64", s.Nodes)
	case !(s.Loss >= 0 && s.Loss < 1):
		return fmt.Errorf("sim.loss = %v: want 0 ≤ loss < 1", s.Loss)
	case s.Delay.Duration < 0 || s.Delay.Duration > time.Second:
		return fmt.Errorf("sim.delay = %q: want 0 to 1s", s.Delay.Duration)
	}
	return nil
}
