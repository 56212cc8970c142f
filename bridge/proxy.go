// Package bridge is gatewayd's CoAP proxy: the endpoints clients talk to,
// the request chain in its fixed order, routing, and the upstream
// transports that reach origin servers and radio nodes.
//
// The chain, fixed here and nowhere else:
//
//	amp → access → hop-limit → guard → local → pubsub gate → rd gate → observe → pubsub → rd → cache → route → upstream
//
// amp keeps answers to addresses nobody has verified within three times
// their requests (RFC 9175 §2.4: Echo, Block2); access rate-limits
// clients (the endpoints drop unknown ones); hop-limit
// enforces RFC 8768; the guard marks OSCORE requests so that later stages
// only read or rewrite outer options; local answers requests for the proxy
// itself; the pubsub and rd gates apply the broker's and the resource
// directory's access lists before the hub can let an observer join an
// observation; pubsub and rd serve the broker and the resource directory
// (RFC 9176), whose registrations are reverse routes too; route picks the target
// (Proxy-Uri, Proxy-Scheme, reverse route, next hop) and rewrites the
// options as PR1.1/PR1.2 allow; upstream sends
// the request and writes the response back unmodified (PR1.3). The cache
// (RFC 7252 §5.6, PR3.x) sits before route, and the Observe hub (RFC 7641
// §5, PR4.x) before the cache.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opaque-edge/gatewayd/acl"
	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/internal/clock"
	"github.com/opaque-edge/gatewayd/internal/service"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/rd"
)

// Proxy is a running proxy: its endpoints, chain and upstreams.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	chain atomic.Pointer[chainState] // swapped whole by Reload
	up    *ipUpstream
	// streamUp and dtlsUp hold the connections to coap+tcp, coaps+tcp,
	// coap+ws, coaps+ws and coaps origins, across reloads.
	streamUp *streamOrigins
	dtlsUp   *dtlsOrigins
	radios   []*radioUpstream
	cache    *cache.Cache
	hub      *observe.Hub
	broker   *pubsub.Broker // nil unless [pubsub] enabled
	rd       *rd.Directory  // nil unless [rd] enabled
	amp      *verifier      // amplification mitigation: Echo values and verified addresses
	plugins  *plugins.Host  // nil without [[plugin]] tables
	started  time.Time
	version  string // of the running gatewayd, for /status and gatewayd_build_info

	registry  *prometheus.Registry
	metrics   *metrics
	groupm    *groupState
	admin     *http.Server
	adminAddr string
	adminDone chan struct{}
	console   *consoleState   // nil unless the admin endpoint serves the console
	recent    *console.Recent // nil: no "last errors" on the console
	// consoleTicks, when set, paces the console's sampler in place of a
	// ticker (tests).
	consoleTicks <-chan time.Time
	servers      []*coap.Endpoint
	dtls         []*DTLS           // the DTLS listeners among the servers' transports, for Reload
	streams      []*streamListener // tcp://, tls://, ws://, wss://
	tls          *tlsKeys          // the TLS listeners' keys, nil without one
	addrs        []netip.AddrPort
	labels       []string // per server: the listen entry

	probeMu   sync.Mutex
	probe     *coap.Endpoint // guarded by probeMu: the watchdog's client
	probePort atomic.Uint32

	closeOnce sync.Once
}

// Option adjusts New.
type Option func(*options)

type options struct {
	inherited    []service.Socket
	version      string
	recent       *console.Recent
	consoleTicks <-chan time.Time
	rd           []rd.Option // tests: the directory's clock
}

// withRDOptions passes options to the resource directory (tests).
func withRDOptions(opts ...rd.Option) Option {
	return func(o *options) { o.rd = append(o.rd, opts...) }
}

// WithVersion names the running gatewayd's version in /status and in
// gatewayd_build_info.
func WithVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// New binds the configured endpoints and starts serving. cfg must be
// validated. Close stops everything New started.
func New(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (_ *Proxy, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	defer func() {
		if err != nil { // failed before listen took them
			closeSockets(o.inherited)
		}
	}()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Proxy.Name == "" {
		cfg.Proxy.Name, _ = os.Hostname()
		if cfg.Proxy.Name == "" {
			cfg.Proxy.Name = "gatewayd"
		}
	}
	if o.version == "" {
		o.version = "devel"
	}
	p := &Proxy{cfg: cfg, log: log, started: time.Now(), version: o.version, registry: prometheus.NewRegistry(), amp: newVerifier(cfg.Proxy),
		recent: o.recent, consoleTicks: o.consoleTicks}
	for _, w := range cfg.Warnings() {
		log.Warn("configuration warning", "component", "config", "warning", w)
	}
	up, err := newIPUpstream(ctx, log.With("component", "upstream"))
	if err != nil {
		return nil, err
	}
	p.up = up
	p.streamUp = newStreamOrigins(stream.Config{
		MaxMessageSize: cfg.Proxy.MaxMessageSize,
		Keepalive:      cfg.Proxy.Keepalive.Duration,
		Logger:         log.With("component", "upstream", "transport", "stream"),
	}, cfg.Proxy.OriginIdle.Duration, clock.System)
	p.dtlsUp = newDTLSOrigins(log.With("component", "upstream", "transport", "dtls"), cfg.Proxy.OriginIdle.Duration, clock.System)
	p.cache = cache.New(cfg.Cache, cache.WithLogger(log.With("component", "cache")))
	p.hub = observe.New(cfg.Observe,
		observe.WithLogger(log.With("component", "observe")),
		observe.WithKey(hubKey),
		// A plugin's observations have their own bound (max_observations
		// of its [[plugin]] table). p.plugins is set below, before the
		// chain that calls this is built.
		observe.WithClientLimit(func(a netip.Addr) (int, bool) { return p.plugins.ObserveLimit(a) }),
		observe.WithOnNotify(func(key string, n *coap.Message) {
			// Notifications keep the cache entry current (RFC 7641 §5).
			if k, ok := cacheKeyOf(key); ok {
				p.cache.Store(k, n)
			}
		}))
	if cfg.PubSub.Enabled {
		b, err := pubsub.New(cfg.PubSub, pubsub.WithLogger(log.With("component", "pubsub")),
			pubsub.WithRadioPrefixes(radioPrefixes(cfg.Radio)), pubsub.WithClient(p.clientOf))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("bridge: %w", err)
		}
		p.broker = b
	}
	if cfg.RD.Enabled {
		d, err := rd.New(cfg.RD, append([]rd.Option{rd.WithLogger(log.With("component", "rd")),
			rd.WithRadioPrefixes(radioPrefixes(cfg.Radio)), rd.WithClient(p.clientOf),
			rd.WithFetch(p.rdFetch), rd.WithReserved(p.reservedName)}, o.rd...)...)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("bridge: %w", err)
		}
		p.rd = d
	}
	if len(cfg.Plugin) > 0 {
		// Before the radios: a radio plugin registers its driver. Its
		// front end reaches the chain through Handler, which waits for
		// the chain to be built.
		h, err := plugins.New(ctx, cfg.Plugin, p.Handler(), log.With("component", "plugins"))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("bridge: %w", err)
		}
		p.plugins = h
	}
	for _, rc := range cfg.Radio {
		r, err := radio.Open(ctx, rc, log.With("component", "radio"))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("bridge: %w", err)
		}
		// Nodes may send requests to the gateway too (the broker); the
		// chain serves them like any client's.
		e := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{
			Params:  r.Params(),
			Handler: coap.HandlerFunc(p.serveChain),
			// A node that acknowledges the gateway's CONs receives at
			// its address; its requests are then answered in full.
			OnAck:  p.amp.onAck,
			Logger: log.With("component", "endpoint", "radio", rc.Name),
		})
		p.radios = append(p.radios, &radioUpstream{r: r, e: e})
	}
	p.metrics = newMetrics(p.registry, p, o.version)
	p.groupm = newGroupState(p.registry)
	chain, err := p.buildChain(p.cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.chain.Store(chain)
	inherited := o.inherited
	o.inherited = nil
	if err := p.listen(ctx, inherited); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// serveChain hands a request to the chain once it is built (radio
// endpoints start before it is).
func (p *Proxy) serveChain(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	c := p.chain.Load()
	if c == nil {
		return coap.Errorf(coap.ServiceUnavailable, "starting")
	}
	return c.h.ServeCoAP(ctx, w, r)
}

// local picks the requests for the proxy itself that the local stage
// answers at once (coap.EndpointConfig.Local): /.well-known/core, and the
// 4.02, 4.04 or 4.05 of anything else not forwarded. The endpoints serve
// them on their reader without a slot of the in-flight pool, so neither
// the watchdog's probe nor a client asking what the gateway offers waits
// behind requests to a silent upstream. Not the broker's: its requests may
// block, and wait for a slot like forwarded ones.
func (p *Proxy) local(r *coap.Request) bool {
	c := p.chain.Load()
	if c == nil {
		return true // answered 5.03 "starting" at once
	}
	return !c.router.forwards(r.Msg) && !p.ownedLocal(r.Msg)
}

// ownedLocal reports a request for a resource of the proxy's own that a
// stage after the local one serves: the broker's, the directory's.
func (p *Proxy) ownedLocal(m *coap.Message) bool {
	return p.broker != nil && p.broker.Owns(m) || p.rd != nil && p.rd.Owns(m)
}

// inline picks the requests the endpoints serve on their reader goroutine
// (coap.EndpointConfig.Inline): forwarded requests, whose way through the
// chain never blocks there. The cache answers or forwards them, and the
// router answers from the upstream's reader (coap.Later) or, for what may
// block (a name lookup, a radio, a plugin, a wait for an identical
// request), from a goroutine of its own. Not an Observe registration: the
// hub waits for the first response; nor what the broker serves.
func (p *Proxy) inline(r *coap.Request) bool {
	c := p.chain.Load()
	m := r.Msg
	return c != nil && !m.Options.Has(coap.Observe) && c.router.forwards(m) && !p.ownedLocal(m) && !c.group.owns(m)
}

// readers is how many goroutines read a listener: one per core for UDP,
// whose requests are served by the goroutine that read them (inline); one
// for DTLS, whose transport reads its sessions through one queue.
func readers(scheme string) int {
	if scheme == "udp" {
		return runtime.GOMAXPROCS(0)
	}
	return 1
}

// Radios are the opened radios, in the order of the config.
func (p *Proxy) Radios() []*radio.Radio {
	rs := make([]*radio.Radio, len(p.radios))
	for i, u := range p.radios {
		rs[i] = u.r
	}
	return rs
}

// hubKey names an observation for aggregation: the cache key, so that the
// hub and the cache agree on what "the same resource" is; requests the
// cache does not key (OSCORE) get the hub's own key.
func hubKey(r *coap.Request) (string, bool) {
	if k, ok := cache.KeyOf(r); ok {
		return "c" + string(k.ID[:]) + string(k.URI[:]) + string(k.Rep[:]), true
	}
	return observe.DefaultKey(r)
}

// cacheKeyOf is the cache key a hubKey carries, Rep included: with it a
// notification's first block ends the cached blocks of the representation
// it replaces (RFC 7959 §2.10, §3).
func cacheKeyOf(key string) (cache.Key, bool) {
	var k cache.Key
	if len(key) != 1+len(k.ID)+len(k.URI)+len(k.Rep) || key[0] != 'c' {
		return k, false
	}
	copy(k.ID[:], key[1:])
	copy(k.URI[:], key[1+len(k.ID):])
	copy(k.Rep[:], key[1+len(k.ID)+len(k.URI):])
	return k, true
}

// radioPrefixes are the networks of the configured radios.
func radioPrefixes(rs []radio.Config) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(rs))
	for _, rc := range rs {
		if pfx := rc.Defaults().Prefix; pfx.IsValid() {
			ps = append(ps, pfx)
		}
	}
	return ps
}

// clientOf is who sent a request, for the broker's access lists: the
// client of acl.Of, except for a request this proxy forwarded to itself
// (a Proxy-Uri naming one of its own addresses). That one comes back from
// the upstream socket, from loopback or another address of this host,
// and the client who asked for it is not known here: it is no one, and
// so never an admin by the proxy's own address.
func (p *Proxy) clientOf(r *coap.Request) acl.Client {
	if p.fromSelf(r.Peer) {
		return acl.Client{}
	}
	return acl.Of(r)
}

// fromSelf reports a datagram from one of the upstream sockets: from
// their port, at an address of this host. Failing to list the host's
// addresses counts as yes, which only takes privileges away.
func (p *Proxy) fromSelf(peer netip.AddrPort) bool {
	if p.up == nil || !slices.Contains(p.up.ports, peer.Port()) {
		return false
	}
	a := peer.Addr().Unmap().WithZone("")
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// isPlugin reports the address a plugin's front end calls the chain from:
// its clients reached it over TCP (HTTP, MQTT), whose handshake verified
// their addresses.
func (p *Proxy) isPlugin(a netip.Addr) bool {
	_, ok := p.plugins.ObserveLimit(a)
	return ok
}

// localLinks are the /.well-known/core entries of the resources the
// broker and the directory serve.
func (p *Proxy) localLinks() []string {
	var ls []string
	if p.broker != nil {
		ls = append(ls, p.broker.Links()...)
	}
	if p.rd != nil {
		ls = append(ls, p.rd.Links()...)
	}
	return ls
}

// Broker is the pub-sub broker, nil unless enabled.
func (p *Proxy) Broker() *pubsub.Broker { return p.broker }

// RD is the resource directory, nil unless enabled. Its Endpoints and
// Stats are what /status shows of it.
func (p *Proxy) RD() *rd.Directory { return p.rd }

// rdFetch sends the directory's GET of a registrant's /.well-known/core
// (simple registration, RFC 9176 §5.1) the way a forwarded request to
// that address would go: over its radio, or over IP if allow has it.
func (p *Proxy) rdFetch(ctx context.Context, dst netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	c := p.chain.Load()
	if c == nil {
		return nil, errors.New("bridge: starting")
	}
	up, err := c.router.reach(dst.Addr())
	if err != nil {
		return nil, err
	}
	return up.RoundTrip(ctx, dst, req)
}

// reservedName reports a first path segment a registered endpoint may
// not take as its route: a [[route]] of the running configuration, or
// the broker's collection.
func (p *Proxy) reservedName(name string) bool {
	if c := p.chain.Load(); c != nil {
		for _, r := range c.cfg.Route {
			if r.Name == name {
				return true
			}
		}
	}
	return p.broker != nil && name == strings.SplitN(p.cfg.PubSub.Path, "/", 2)[0]
}

// Hub is the Observe hub.
func (p *Proxy) Hub() *observe.Hub { return p.hub }

// Cache is the response cache.
func (p *Proxy) Cache() *cache.Cache { return p.cache }

// Addrs are the bound listener addresses, in the order of the config.
func (p *Proxy) Addrs() []netip.AddrPort { return p.addrs }

// Handler is the request chain, for endpoints other than the proxy's own
// listeners (plugins, tests).
func (p *Proxy) Handler() coap.Handler { return coap.HandlerFunc(p.serveChain) }

// Close stops the listeners and upstreams and waits for them. Idempotent.
func (p *Proxy) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		for _, l := range p.streams {
			l.s.Close()
		}
		for _, e := range p.servers {
			if err := e.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		p.probeMu.Lock()
		if p.probe != nil {
			p.probe.Close()
		}
		p.probeMu.Unlock()
		if p.admin != nil {
			p.closeConsole()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			p.admin.Shutdown(ctx)
			cancel()
			<-p.adminDone
		}
		if p.hub != nil {
			p.hub.Close()
		}
		if p.broker != nil {
			p.broker.Close()
		}
		if p.rd != nil {
			p.rd.Close()
		}
		if p.up != nil {
			p.up.Close()
		}
		if p.streamUp != nil {
			p.streamUp.Close()
			p.dtlsUp.Close()
		}
		for _, r := range p.radios {
			if err := r.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if p.plugins != nil {
			if err := p.plugins.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// stage is one link of the chain: it serves or calls next.
type stage func(next coap.Handler) coap.Handler

// chainState is one built chain and the settings it was built from.
type chainState struct {
	h       coap.Handler
	router  *router
	group   *groupStage
	clients []netip.Prefix
	cfg     Config
}

// buildChain assembles the chain in its one fixed order from cfg, over the
// proxy's long-lived parts (endpoints, radios, cache, hub, broker).
func (p *Proxy) buildChain(cfg Config) (*chainState, error) {
	r, err := newRouter(cfg, p.up, p.radios, p.streamUp, p.dtlsUp)
	if err != nil {
		return nil, err
	}
	clients, err := parsePrefixes(cfg.Proxy.Clients)
	if err != nil {
		return nil, err
	}
	verified, err := parsePrefixes(cfg.Proxy.Verified)
	if err != nil {
		return nil, err
	}
	for t, name := range transportNames {
		r.latency[t] = p.metrics.latency.WithLabelValues(name)
	}
	if p.plugins != nil {
		r.translator = p.plugins.Translator
	}
	group, err := newGroupStage(cfg, r, p.radios, p.groupm)
	if err != nil {
		return nil, err
	}
	if p.rd != nil {
		r.dyn = p.rd
	}
	// The broker and the directory come after the hub: a subscription,
	// an observed lookup, is an observation they serve as its origin, so
	// the hub's fan-out, numbering and latest-wins delivery apply to
	// their observers too. They serve only requests for the proxy
	// itself: one a route takes elsewhere (by Uri-Host, whatever its
	// path) passes them.
	stages := []stage{
		newAmp(p.amp, verified, p.isPlugin, r.forwards),
		newAccess(cfg.Proxy),
		newHopLimit(cfg.Proxy, p.log.With("component", "hoplimit"), r.forwards),
		guard,
		group.stage,
		newLocal(cfg, r.forwards, p.ownedLocal, p.localLinks),
	}
	// Their access lists go before the hub, which lets an observer join
	// an observation it holds without asking them.
	if p.broker != nil {
		stages = append(stages, ownLocal(r.forwards, p.broker.Gate))
	}
	if p.rd != nil {
		stages = append(stages, ownLocal(r.forwards, p.rd.Gate))
	}
	stages = append(stages, p.hub.Stage)
	if p.broker != nil {
		stages = append(stages, ownLocal(r.forwards, p.broker.Stage))
	}
	if p.rd != nil {
		stages = append(stages, ownLocal(r.forwards, p.rd.Stage))
	}
	stages = append(stages, p.cache.Stage, r.stage)
	var h coap.Handler = coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		return coap.Errorf(coap.NotFound, "")
	})
	for i := len(stages) - 1; i >= 0; i-- {
		h = stages[i](h)
	}
	first := p.metrics.stage(h)
	return &chainState{
		h:       first,
		router:  r,
		group:   group,
		clients: clients,
		cfg:     cfg,
	}, nil
}

// ownLocal keeps a stage of the proxy's own resources to requests for
// the proxy: a forwarded one goes straight to next.
func ownLocal(forwards func(*coap.Message) bool, s stage) stage {
	return func(next coap.Handler) coap.Handler {
		own := s(next)
		return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			if forwards(r.Msg) {
				return next.ServeCoAP(ctx, w, r)
			}
			return own.ServeCoAP(ctx, w, r)
		})
	}
}
