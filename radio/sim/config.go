package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
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
	// Leisure is the longest a node waits before it answers a group
	// request; it picks a random time below it (RFC 7252 §8.2,
	// draft-ietf-core-groupcomm-bis §3.6). Default DefaultLeisure.
	Leisure radio.Duration `toml:"leisure"`
	// Groups are multicast groups some or all nodes join, besides All
	// CoAP Nodes (ff02::fd, ff03::fd, ff05::fd), which every node joins
	// (RFC 7252 §12.8).
	Groups []GroupConfig `toml:"group"`
}

// GroupConfig is one [[radio.sim.group]]: a multicast address, and the
// nodes (numbered from 1) that join it; none listed means all.
type GroupConfig struct {
	Address netip.Addr `toml:"address"`
	Nodes   []int      `toml:"nodes"`
}

// DefaultLeisure is a simulated node's Leisure. RFC 7252 §8.2's default
// (5 s) is for 50 nodes answering 100 bytes at 1 kB/s; the simulated air
// carries them at any rate, and a shorter wait keeps the demo brisk.
const DefaultLeisure = time.Second

// AllCoAPNodes are the All CoAP Nodes addresses every simulated node
// joins (RFC 7252 §12.8): link-local, realm-local and site-local scope.
var AllCoAPNodes = []netip.Addr{
	netip.MustParseAddr("ff02::fd"), netip.MustParseAddr("ff03::fd"), netip.MustParseAddr("ff05::fd"),
}

// groupsOf are the groups node i (from 0) joins.
func (c Config) groupsOf(i int) []netip.Addr {
	gs := append([]netip.Addr(nil), AllCoAPNodes...)
	for _, g := range c.Groups {
		if len(g.Nodes) == 0 || slices.Contains(g.Nodes, i+1) {
			gs = append(gs, g.Address)
		}
	}
	return gs
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
	if s.Leisure.Duration == 0 {
		s.Leisure.Duration = DefaultLeisure
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
	case s.Leisure.Duration < 0 || s.Leisure.Duration > time.Minute:
		return fmt.Errorf("sim.leisure = %q: want 0 to 1m", s.Leisure.Duration)
	}
	for i, g := range s.Groups {
		if !g.Address.Is6() || !g.Address.IsMulticast() {
			return fmt.Errorf("sim.group[%d]: address %v: want an IPv6 multicast address", i, g.Address)
		}
		for _, n := range g.Nodes {
			if n < 1 || n > s.Nodes {
				return fmt.Errorf("sim.group[%d]: node %d: want 1 to %d", i, n, s.Nodes)
			}
		}
	}
	return nil
}
