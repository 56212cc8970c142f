package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// DefaultPortName is the pty link's name in a Network's directory.
const DefaultPortName = "rcp0"

// Reconnect backoff of the spinel driver in a Network: a simulated dongle
// comes back quickly, so the driver looks for it more often than for a
// real one.
const (
	netBackoffMin = 50 * time.Millisecond
	netBackoffMax = 500 * time.Millisecond
)

// NodeExtAddr is the extended address of a Network's node i (from 0):
// 02:00:00:00:00:00:00:00 plus i+1, locally administered, so the node's
// IPv6 address is the prefix plus ::(i+1), e.g. fd00:db8:1::1.
func NodeExtAddr(i int) mac.Addr {
	return mac.ExtendedAddrUint64(0x0200_0000_0000_0000 + uint64(i+1))
}

// NodeAddr is the IPv6 address of a Network's node i (from 0) in prefix:
// the prefix and the IID of NodeExtAddr(i) (RFC 4944 §6), e.g.
// fd00:db8:1::1 for the first node in DefaultPrefix.
func NodeAddr(prefix netip.Prefix, i int) netip.Addr {
	b := prefix.Masked().Addr().As16()
	iid, _ := NodeExtAddr(i).IID()
	copy(b[8:], iid[:])
	return netip.AddrFrom16(b)
}

// nodeFading is how much, in dB, the RSSI of a Network's receptions
// varies either way.
const nodeFading = 3

// NodeAttenuation is the path loss in dB between a Network's node i (from
// 0) and the gateway: 20 dB for the first, 8 dB more for each next one
// up to the fifth, and then again from 20 dB: over the Air's -40 dBm the
// nodes are heard at about -60, -68, -76, -84 and -92 dBm (LQI about 204,
// 163, 122, 81 and 40), within any 802.15.4 radio's sensitivity.
func NodeAttenuation(i int) float64 { return 20 + 8*float64(i%5) }

// Network is the "sim" radio driver: an Air, a fake RCP on it behind a
// real pty, the real spinel driver on that pty (through go.bug.st/serial),
// and simulated CoAP nodes on the same Air in the radio's prefix. It is a
// radio.Link (the spinel driver's, embedded, so its State, WaitUp, Stats
// and Info are there too); Close stops all of it.
type Network struct {
	*spinel.Driver

	air   *Air
	rcp   *RCP
	port  *Port
	nodes []*Node
	ext   [8]byte
	tmp   string // a temporary directory Close removes, or ""

	once     sync.Once
	closeErr error
}

var (
	_ radio.Link            = (*Network)(nil)
	_ radio.NodeLister      = (*Network)(nil)
	_ radio.ExtAddrReporter = (*Network)(nil)
	_ radio.UpReporter      = (*Network)(nil)
)

// NewNetwork starts a simulated network for a `[[radio]]` config with
// defaults applied (radio.Config.Defaults): cfg.Device, if set, is where
// the pty is published (its directory is created if missing); otherwise a
// temporary directory is made and removed by Close. cfg.Options (a Config) sets the node
// count, loss and air time, and the nodes' end-to-end keys through the
// registered KeyLoader (ErrNoKeyLoader if there is none); cfg.ExtAddr, if
// set, is the RCP's HWADDR. The link comes up shortly after NewNetwork
// returns (see WaitUp).
func NewNetwork(cfg radio.Config, log *slog.Logger) (n *Network, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !cfg.Prefix.IsValid() {
		return nil, fmt.Errorf("sim: network %q: no prefix", cfg.Name)
	}
	sc := configOf(cfg)
	count := sc.Nodes
	if count <= 0 {
		count = DefaultNodes
	}
	// Nodes are placed ever farther from the gateway and the air fades a
	// little, so each is heard at its own plausible, varying RSSI and LQI.
	started := &Network{air: NewAir(AirConfig{Loss: sc.Loss, Delay: sc.Delay.Duration, RSSI: -40, Fading: nodeFading})}
	n = started
	defer func() {
		// Not n.Close: a failing return has set n to nil already.
		if err != nil {
			started.Close()
			n = nil
		}
	}()
	var rc RCPConfig
	if e, ok := cfg.ExtAddr.Extended(); ok {
		rc.HWAddr = e
	}
	n.rcp = NewRCP(rc, n.air)
	n.ext = n.rcp.cfg.HWAddr

	dir, name := filepath.Dir(cfg.Device), filepath.Base(cfg.Device)
	if cfg.Device == "" {
		if n.tmp, err = os.MkdirTemp("", "gatewayd-sim-"); err != nil {
			return nil, fmt.Errorf("sim: network %q: %w", cfg.Name, err)
		}
		dir, name = n.tmp, DefaultPortName
	} else if err = os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sim: network %q: %w", cfg.Name, err)
	}
	if n.port, err = NewPort(dir, name, n.rcp); err != nil {
		return nil, fmt.Errorf("sim: network %q: %w", cfg.Name, err)
	}

	keys, err := loadKeys(sc, count)
	if err != nil {
		return nil, fmt.Errorf("sim: network %q: %w", cfg.Name, err)
	}
	params := coap.Params{AckTimeout: cfg.AckTimeout.Duration, MaxRetransmit: cfg.MaxRetransmit}
	for i := range count {
		nc := NodeConfig{
			ExtAddr: NodeExtAddr(i), PANID: cfg.PANID, Prefix: cfg.Prefix,
			Params: params, Base: float64(i), Logger: log,
			Groups: sc.groupsOf(i), Leisure: sc.Leisure.Duration,
			Attenuation: NodeAttenuation(i),
		}
		if keys != nil {
			nc.OSCORE, nc.Signer = keys[i].OSCORE, keys[i].Signer
		}
		node, err := NewNode(n.air, nc)
		if err != nil {
			return nil, fmt.Errorf("sim: network %q: node %d: %w", cfg.Name, i, err)
		}
		n.nodes = append(n.nodes, node)
	}

	dc := spinel.FromRadioConfig(cfg, log)
	dc.Device = n.port.Path()
	dc.ExtAddr = n.ext
	dc.BackoffMin, dc.BackoffMax = netBackoffMin, netBackoffMax
	if n.Driver, err = spinel.New(dc); err != nil {
		return nil, fmt.Errorf("sim: network %q: %w", cfg.Name, err)
	}
	log.Info("simulated network", "port", n.port.Path(), "nodes", n.Nodes())
	return n, nil
}

// ExtAddr is the gateway radio's extended address (the RCP's HWADDR),
// known before the link comes up.
func (n *Network) ExtAddr() [8]byte { return n.ext }

// Nodes returns the simulated nodes' IPv6 addresses, in node order.
func (n *Network) Nodes() []netip.Addr {
	a := make([]netip.Addr, len(n.nodes))
	for i, node := range n.nodes {
		a[i] = node.Addr()
	}
	return a
}

// SimNodes returns the simulated nodes.
func (n *Network) SimNodes() []*Node { return append([]*Node(nil), n.nodes...) }

// Air is the shared medium.
func (n *Network) Air() *Air { return n.air }

// RCP is the fake radio co-processor.
func (n *Network) RCP() *RCP { return n.rcp }

// Port is the pty the spinel driver opens; Unplug and Plug it to simulate
// pulling the dongle.
func (n *Network) Port() *Port { return n.port }

// Close stops the spinel driver, the port, the RCP and the nodes, removes
// the temporary directory and waits for every goroutine. It is
// idempotent.
func (n *Network) Close() error {
	n.once.Do(func() {
		var errs []error
		if n.Driver != nil {
			errs = append(errs, n.Driver.Close())
		}
		if n.port != nil {
			errs = append(errs, n.port.Close())
		}
		if n.rcp != nil {
			n.rcp.Leave()
		}
		for _, node := range n.nodes {
			errs = append(errs, node.Close())
		}
		if n.tmp != "" {
			if err := os.RemoveAll(n.tmp); err != nil {
				errs = append(errs, fmt.Errorf("sim: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// FromLink returns the Network behind a Link a "sim" radio was opened
// with (radio.Radio.Link), if it is one.
func FromLink(l radio.Link) (*Network, bool) {
	n, ok := l.(*Network)
	return n, ok
}
