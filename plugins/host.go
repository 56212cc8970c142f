// Package plugins runs gatewayd's plugins: it verifies each executable
// against its configured SHA-256 before every start, starts it with
// hashicorp/go-plugin (gRPC, automatic mutual TLS), restarts it with
// backoff when it dies, and offers what it serves to the proxy: translators
// by URI scheme, radios as "plugin:<name>" radio drivers, and a callback
// through which a plugin's front end sends requests into the chain.
//
// A plugin never takes gatewayd down: every call into and out of a plugin
// recovers from panics and treats the plugin's bytes as untrusted; a plugin
// that is down answers 5.03 with Max-Age instead of blocking.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"

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
	schemes map[string]*Translator

	closeOnce sync.Once
}

// New verifies and starts every plugin and waits until each has told what
// it serves. It fails when a plugin cannot start (wrong sha256, bad
// config, crash at start); after that, plugins that die are restarted.
// chain is where Host.Do callbacks of plugin front ends go. Radio plugins
// are registered as radio drivers "plugin:<name>", so New must run before
// [[radio]] tables are validated. ctx bounds the starts only. log may be nil.
func New(ctx context.Context, cfgs []Config, chain coap.Handler, log *slog.Logger) (*Host, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "plugins")
	h := &Host{
		chain:   chain,
		log:     log,
		startq:  make(chan func()),
		started: make(chan struct{}),
		schemes: map[string]*Translator{},
	}
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
		if err == nil {
			err = h.claim(p, inst.init.GetSchemes())
			if err != nil {
				inst.stop()
			}
		}
		if err != nil {
			h.Close()
			return nil, err
		}
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
	for _, s := range schemes {
		if s == "" || len(s) > 64 {
			return fmt.Errorf("plugins: %s: bad scheme %q", p.cfg.Name, s)
		}
		if o, dup := h.schemes[s]; dup {
			return fmt.Errorf("plugins: %s: scheme %q is already served by plugin %s", p.cfg.Name, s, o.p.cfg.Name)
		}
		h.schemes[s] = &Translator{p: p, scheme: s}
	}
	return nil
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

// Translator returns the translator serving scheme.
func (h *Host) Translator(scheme string) (*Translator, bool) {
	t, ok := h.schemes[scheme]
	return t, ok
}

// Schemes returns the schemes plugins serve.
func (h *Host) Schemes() []string {
	s := make([]string, 0, len(h.schemes))
	for k := range h.schemes {
		s = append(s, k)
	}
	return s
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
	LastError  string
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
