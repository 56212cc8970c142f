// Package plugins runs gatewayd's plugins: it verifies each executable
// against its configured SHA-256 before every start, starts it with
// hashicorp/go-plugin (gRPC, automatic mutual TLS), restarts it with
// backoff when it dies, and offers what it serves to the proxy: translators
// by URI scheme, radios as "plugin:<name>" radio drivers, and a callback
// through which a plugin's front end sends requests into the chain.
//
// A plugin never takes gatewayd down: one that cannot start is logged and
// retried with backoff while gatewayd serves everything else; every call
// into and out of a plugin recovers from panics and treats the plugin's
// bytes as untrusted; a plugin that is down answers 5.03 with Max-Age
// instead of blocking.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Host runs the configured plugins.
type Host struct {
	chain coap.Handler
	log   *slog.Logger

	ctx    context.Context // the plugins' lifetime; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervisors and the goroutines of Observe

	startq  chan func()   // run on the starter thread
	started chan struct{} // closed when the starter thread ends

	plugins []*plug
	// schemes maps a URI scheme to the translator of the plugin serving
	// it. Read on every request, so swapped whole (copy on write) under
	// claimMu when a plugin that could not start at first comes up.
	schemes atomic.Pointer[map[string]*Translator]
	claimMu sync.Mutex

	closeOnce sync.Once
}

// New verifies and starts every plugin and waits until each has told what
// it serves, or has failed to start. A plugin that cannot start (a missing
// file, a digest that does not match, a crash at start) does not fail New:
// it is logged at error level and started again with backoff, like a
// plugin that died, and claims its schemes when it first comes up; until
// then a request for a scheme no plugin serves is answered 5.03 with
// Max-Age, since that plugin may be the one to serve it. New fails on a
// configuration error, or when two plugins claim one scheme. chain is where
// Host.Do callbacks of plugin front ends go. Radio plugins are registered
// as radio drivers "plugin:<name>" (a plugin that has not started yet, as
// one that may be a radio), so New must run before [[radio]] tables are
// validated. ctx bounds the first starts only. log may be nil.
func New(ctx context.Context, cfgs []Config, chain coap.Handler, log *slog.Logger) (*Host, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Host{
		chain:   chain,
		log:     log,
		startq:  make(chan func()),
		started: make(chan struct{}),
	}
	h.schemes.Store(&map[string]*Translator{})
	h.ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	names := map[string]bool{}
	for i, c := range cfgs {
		c = c.Defaults()
		if err := c.Validate(); err != nil {
			return nil, err
		}
		if names[c.Name] {
			return nil, fmt.Errorf("%w: [[plugin]] %q: name used twice", ErrConfig, c.Name)
		}
		names[c.Name] = true
		h.plugins = append(h.plugins, newPlug(h, c, i))
	}
	go h.starter()
	for _, p := range h.plugins {
		inst, err := p.start(ctx)
		if err != nil {
			if ctx.Err() != nil {
				h.Close()
				return nil, err
			}
			p.log.Error("plugin cannot start; gatewayd serves without it and retries",
				"err", err, "retry_in", minBackoff)
			p.setRetry(minBackoff)
			registerRadio(p)
			h.wg.Add(1)
			go p.supervise(nil)
			continue
		}
		if err := h.claim(p, inst.init.GetSchemes()); err != nil {
			inst.stop()
			h.Close()
			return nil, err
		}
		p.routed.Store(true)
		p.setUp(inst)
		if inst.init.GetRadio() {
			registerRadio(p)
		}
		h.wg.Add(1)
		go p.supervise(inst)
	}
	return h, nil
}

// claim routes the plugin's schemes to it.
func (h *Host) claim(p *plug, schemes []string) error {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	m := maps.Clone(*h.schemes.Load())
	for _, s := range schemes {
		if s == "" || len(s) > 64 {
			return fmt.Errorf("plugins: %s: bad scheme %q", p.cfg.Name, s)
		}
		if o, dup := m[s]; dup {
			return fmt.Errorf("plugins: %s: scheme %q is already served by plugin %s", p.cfg.Name, s, o.p.cfg.Name)
		}
		m[s] = &Translator{p: p, scheme: s}
	}
	h.schemes.Store(&m)
	return nil
}

// claimLate routes the schemes of a plugin that comes up for the first
// time after New, keeping what other plugins serve already.
func (h *Host) claimLate(p *plug, schemes []string) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	m := maps.Clone(*h.schemes.Load())
	for _, s := range schemes {
		if o, dup := m[s]; s == "" || len(s) > 64 || dup {
			owner := ""
			if dup {
				owner = o.p.cfg.Name
			}
			p.log.Error("plugin scheme not routed: bad, or served by another plugin", "scheme", s, "served_by", owner)
			continue
		}
		m[s] = &Translator{p: p, scheme: s}
	}
	h.schemes.Store(&m)
	p.routed.Store(true)
}

// starter runs plugin starts on one OS thread that it never unlocks, so
// that the thread lives exactly as long as the Host: Pdeathsig, tied to
// the thread that forked the plugin, then kills plugins when gatewayd dies
// and not when the Go runtime happens to retire a thread that once ran a
// start (it retires threads whose goroutine exits locked, which a library
// may do at any time).
func (h *Host) starter() {
	runtime.LockOSThread()
	// No Unlock: the thread ends with the goroutine, after Close has
	// stopped every plugin.
	defer close(h.started)
	for f := range h.startq {
		f()
	}
}

// onStarter runs f on the starter thread.
func (h *Host) onStarter(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case h.startq <- func() { defer close(done); f() }:
	case <-ctx.Done():
		return ctx.Err()
	case <-h.ctx.Done():
		return ErrClosed
	}
	<-done
	return nil
}

// ErrClosed is returned by calls on a closed Host.
var ErrClosed = errors.New("plugins: host closed")

// Translator returns the translator serving scheme. While a plugin that
// has never started is down, a scheme no plugin serves gets a translator
// of that plugin that answers 5.03 with Max-Age: until it is up nobody
// knows which schemes it serves.
func (h *Host) Translator(scheme string) (*Translator, bool) {
	if t, ok := (*h.schemes.Load())[scheme]; ok {
		return t, true
	}
	for _, p := range h.plugins {
		if !p.routed.Load() {
			return &Translator{p: p, scheme: scheme, pending: true}, true
		}
	}
	return nil, false
}

// Schemes returns the schemes plugins serve.
func (h *Host) Schemes() []string {
	return slices.Collect(maps.Keys(*h.schemes.Load()))
}

// Close stops every plugin and waits for them and for the Host's
// goroutines. It is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		h.wg.Wait()
		for _, p := range h.plugins {
			p.shutdown()
			unregisterRadio(p)
		}
		close(h.startq)
		<-h.started
	})
	return nil
}

// Stats is a snapshot of one plugin.
type Stats struct {
	Name      string
	Path      string
	Up        bool
	PID       int    // 0 while down
	Starts    uint64 // successful starts, the first included
	Restarts  uint64 // times it died (or was stopped for a fault) while gatewayd ran
	Failures  uint64 // start attempts that failed: checksum, exec, handshake, init
	Requests  uint64 // translator round trips and observations sent to it
	Unavail   uint64 // requests refused with 5.03 while it was down
	Callbacks uint64 // Host.Do calls from its front end
	Observes  uint64 // Host.Observe calls from its front end
	// ObserveSkipped counts notifications of its Host.Observe streams
	// replaced by a newer one before it read them (RFC 7641 §4.5).
	ObserveSkipped uint64
	// TooLarge counts bodies of its Host.Do and Host.Observe callbacks
	// refused whole for being over its max_body: request bodies (4.13)
	// and representations (5.02).
	TooLarge uint64
	// Blockwise counts its Host.Do calls and Host.Observe messages that
	// took more than one exchange in the chain: RFC 7959 transfers.
	Blockwise uint64
	// LogDropped counts its log lines dropped over the rate limit (50
	// a second, 200 at once).
	LogDropped uint64
	LastError  string         // why it last went down or failed to start
	RetryAt    time.Time      // while down: when the next start is due; zero while up
	Peer       netip.AddrPort // the Request.Peer of its Host.Do and Host.Observe callbacks
}

// Stats returns a snapshot per plugin, in configuration order.
func (h *Host) Stats() []Stats {
	out := make([]Stats, 0, len(h.plugins))
	for _, p := range h.plugins {
		out = append(out, p.stats())
	}
	return out
}
