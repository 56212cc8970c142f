package radio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/pcap"
)

// Optional capabilities of a Link, found by type assertion.
type (
	// UpReporter tells whether the link is usable now.
	UpReporter interface{ Up() bool }
	// UpWaiter blocks until the link is up, ctx is done or the link is
	// closed.
	UpWaiter interface {
		WaitUp(ctx context.Context) error
	}
	// ExtAddrReporter tells the radio's extended address (EUI-64,
	// canonical order); all zero while the driver does not know it yet.
	ExtAddrReporter interface{ ExtAddr() [8]byte }
	// NodeLister tells the addresses of the nodes behind the link; the
	// simulator knows them, a real radio does not.
	NodeLister interface{ Nodes() []netip.Addr }
	// LinkCounterReporter reports the link's counters.
	LinkCounterReporter interface{ LinkCounters() LinkCounters }
	// FirmwareReporter tells the radio's firmware version (an RCP's
	// NCP_VERSION); "" while the driver does not know it.
	FirmwareReporter interface{ Firmware() string }
)

// LinkCounters are the counters a driver can report.
type LinkCounters struct {
	TxFrames   uint64 // frames the radio sent
	TxErrors   uint64 // frames the radio failed to send: no ack, busy channel, link lost
	RxFrames   uint64 // frames received and queued
	RxDropped  uint64 // received frames dropped on a full queue
	Reconnects uint64 // times the link came back after being lost
	LastError  string // why the link last went down
}

// Counters is a snapshot of a Radio.
type Counters struct {
	Up   bool
	Link LinkCounters // zero when the driver reports none
	Conn ConnCounters
}

// pcapFlushEvery bounds how stale a capture file is while the radio runs.
const pcapFlushEvery = time.Second

// Radio is an open radio: a driver's Link, optionally captured to a pcap
// file, and the Conn that carries UDP over it. The bridge uses Conn as the
// coap.Transport for nodes in Prefix.
type Radio struct {
	cfg  Config
	link Link // the driver's, unwrapped
	conn *Conn
	ext  mac.Addr
	pw   *pcap.Writer // nil without capture

	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	closeErr error
}

// Open validates cfg (after Defaults), opens the driver's Link, wraps it in
// a capture Tap when cfg.PCAP is set, and starts a Conn on it. When the
// extended address is neither configured nor known to the driver yet, Open
// waits up to cfg.UpTimeout (and ctx) for the link to come up to learn it.
// Close releases everything Open started. log may be nil.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Radio, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, ok := lookup(cfg.Driver)
	if !ok {
		return nil, fmt.Errorf("radio: %s: driver %q: %w (registered: %s)", cfg.Name, cfg.Driver, ErrUnknownDriver, registered())
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Driver == "spinel" && !cfg.ExtAddr.IsValid() {
		// The host programs the RCP's extended address (MAC_15_4_LADDR),
		// so it need not wait for the dongle to learn it: a stable
		// address of this machine and radio lets gatewayd start with
		// the radio unplugged and keeps the gateway's IPv6 addresses
		// across a dongle swap.
		cfg.ExtAddr = localExtAddr(cfg.Name)
	}
	log = log.With("radio", cfg.Name, "driver", cfg.Driver)
	link, err := d.Open(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("radio: %s: open %s driver: %w", cfg.Name, cfg.Driver, err)
	}
	r := &Radio{cfg: cfg, link: link, stop: make(chan struct{})}
	if r.ext, err = extAddr(ctx, cfg, link); err != nil {
		link.Close()
		return nil, err
	}
	var l Link = link
	if cfg.PCAP != "" {
		if r.pw, err = pcap.Create(cfg.PCAP); err != nil {
			link.Close()
			return nil, fmt.Errorf("radio: %s: %w", cfg.Name, err) // "pcap: ..."
		}
		l = &Tap{Link: link, W: r.pw}
	}
	cc := cfg.connConfig(r.ext)
	cc.Logger = log
	if r.conn, err = NewConn(l, cc); err != nil {
		link.Close()
		if r.pw != nil {
			r.pw.Close()
		}
		return nil, fmt.Errorf("radio: %s: %w", cfg.Name, err)
	}
	if r.pw != nil {
		r.wg.Add(1)
		go r.flushLoop()
	}
	log.Info("radio open", "prefix", cfg.Prefix, "ext_addr", r.ext, "addr", r.conn.LocalAddr().Addr(), "pcap", cfg.PCAP)
	return r, nil
}

// extAddr picks the gateway's extended address: the configured one, else
// the driver's, waiting for the link to come up if the driver must learn
// it from the device.
func extAddr(ctx context.Context, cfg Config, link Link) (mac.Addr, error) {
	if cfg.ExtAddr.IsValid() {
		return cfg.ExtAddr, nil
	}
	er, ok := link.(ExtAddrReporter)
	if !ok {
		return mac.Addr{}, fmt.Errorf("radio: %s: driver %s cannot tell its extended address: set ext_addr", cfg.Name, cfg.Driver)
	}
	if e := er.ExtAddr(); e != ([8]byte{}) {
		return mac.ExtendedAddr(e), nil
	}
	if w, ok := link.(UpWaiter); ok {
		wctx, cancel := context.WithTimeout(ctx, cfg.UpTimeout.Duration)
		err := w.WaitUp(wctx)
		cancel()
		if err != nil {
			return mac.Addr{}, fmt.Errorf("radio: %s: link not up within up_timeout %v to tell its extended address (set ext_addr to start without it): %w", cfg.Name, cfg.UpTimeout.Duration, err)
		}
	}
	if e := er.ExtAddr(); e != ([8]byte{}) {
		return mac.ExtendedAddr(e), nil
	}
	return mac.Addr{}, fmt.Errorf("radio: %s: driver %s does not know its extended address: set ext_addr", cfg.Name, cfg.Driver)
}

func (r *Radio) flushLoop() {
	defer r.wg.Done()
	t := time.NewTicker(pcapFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			_ = r.pw.Flush() // sticky; Close reports it
		}
	}
}

// Name is the configured name.
func (r *Radio) Name() string { return r.cfg.Name }

// Config is the configuration the radio runs with, defaults applied.
func (r *Radio) Config() Config { return r.cfg }

// Prefix is the radio network's /64.
func (r *Radio) Prefix() netip.Prefix { return r.cfg.Prefix }

// ExtAddr is the gateway radio's extended address.
func (r *Radio) ExtAddr() mac.Addr { return r.ext }

// Conn is the transport to nodes: a coap.Transport. An Endpoint on it
// closes it on its own Close; Radio.Close closes it too (either order).
func (r *Radio) Conn() *Conn { return r.conn }

// Link is the driver's Link, without the capture Tap, for its optional
// capabilities.
func (r *Radio) Link() Link { return r.link }

// Params are the CoAP transmission parameters for exchanges over this
// radio.
func (r *Radio) Params() coap.Params {
	return coap.Params{
		AckTimeout:      r.cfg.AckTimeout.Duration,
		AckRandomFactor: coap.DefaultParams.AckRandomFactor,
		MaxRetransmit:   r.cfg.MaxRetransmit,
	}
}

// Contains reports whether a is reached through this radio: in its prefix,
// link-local, or a static neighbour.
func (r *Radio) Contains(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is6() {
		return false
	}
	if r.cfg.Prefix.Contains(a) || linkLocalPrefix.Contains(a) {
		return true
	}
	return slices.ContainsFunc(r.cfg.Neighbors, func(n NeighborConfig) bool { return n.IP == a })
}

// Up reports whether the link is usable now; a driver that cannot tell is
// taken to be up.
func (r *Radio) Up() bool {
	if u, ok := r.link.(UpReporter); ok {
		return u.Up()
	}
	return true
}

// WaitUp blocks until the link is up or ctx is done. With a driver that
// cannot wait it returns at once.
func (r *Radio) WaitUp(ctx context.Context) error {
	if w, ok := r.link.(UpWaiter); ok {
		if err := w.WaitUp(ctx); err != nil {
			return fmt.Errorf("radio: %s: %w", r.cfg.Name, err)
		}
	}
	return nil
}

// Nodes returns the nodes' addresses if the driver knows them (the
// simulator does), else nil.
func (r *Radio) Nodes() []netip.Addr {
	if n, ok := r.link.(NodeLister); ok {
		return n.Nodes()
	}
	return nil
}

// Firmware is the radio's firmware version if the driver can tell it
// (FirmwareReporter), else "".
func (r *Radio) Firmware() string {
	if f, ok := r.link.(FirmwareReporter); ok {
		return f.Firmware()
	}
	return ""
}

// NodeStats is what the Conn saw of each node (Conn.NodeStats).
func (r *Radio) NodeStats() []NodeStats { return r.conn.NodeStats() }

// Counters returns a snapshot of the link's and the Conn's counters.
func (r *Radio) Counters() Counters {
	c := Counters{Up: r.Up(), Conn: r.conn.Counters()}
	if lc, ok := r.link.(LinkCounterReporter); ok {
		c.Link = lc.LinkCounters()
	}
	return c
}

// Close stops the Conn, closes the Link and the capture file, and waits
// for every goroutine Open started. It is idempotent; later calls return
// the first call's result.
func (r *Radio) Close() error {
	r.once.Do(func() {
		close(r.stop)
		r.wg.Wait()
		var errs []error
		if err := r.conn.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := r.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("radio: %s: close link: %w", r.cfg.Name, err))
		}
		if r.pw != nil {
			if err := r.pw.Close(); err != nil {
				errs = append(errs, fmt.Errorf("radio: %s: %w", r.cfg.Name, err))
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// localExtAddr derives a stable, locally administered EUI-64 (IEEE 802
// U/L bit set, group bit clear) from the machine's identity and the
// radio's name.
func localExtAddr(name string) mac.Addr {
	id, err := os.ReadFile("/etc/machine-id")
	if err != nil || len(bytes.TrimSpace(id)) == 0 {
		h, _ := os.Hostname()
		id = []byte(h)
	}
	sum := sha256.Sum256(append(append(bytes.TrimSpace(id), 0), name...))
	var e [8]byte
	copy(e[:], sum[:8])
	e[0] = e[0]&^0x01 | 0x02
	return mac.ExtendedAddr(e)
}
