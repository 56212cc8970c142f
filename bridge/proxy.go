// Package bridge is gatewayd's CoAP proxy: the endpoints clients talk to,
// the request chain in its fixed order, routing, and the upstream
// transports that reach origin servers and radio nodes.
//
// The chain, fixed here and nowhere else:
//
//	amp → access → hop-limit → guard → local → pubsub gate → observe → pubsub → cache → route → upstream
//
// amp keeps answers to addresses nobody has verified within three times
// their requests (RFC 9175 §2.4: Echo, Block2); access rate-limits
// clients (the endpoints drop unknown ones); hop-limit
// enforces RFC 8768; the guard marks OSCORE requests so that later stages
// only read or rewrite outer options; local answers requests for the proxy
// itself; the pubsub gate applies the broker's access lists before the
// hub can let a subscriber join an observation; route picks the target
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
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opaque-edge/gatewayd/acl"
	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
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
	labels       []string // per server: the listen entry or the activated socket

	probeMu   sync.Mutex
	probe     *coap.Endpoint // guarded by probeMu: the watchdog's client
	probePort atomic.Uint32

	closeOnce sync.Once
}

// Option adjusts New.
type Option func(*options)

type options struct {
	activated    []net.PacketConn
	version      string
	recent       *console.Recent
	consoleTicks <-chan time.Time
}

// WithVersion names the running gatewayd's version in /status and in
// gatewayd_build_info.
func WithVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// WithPacketConns serves CoAP on sockets opened by someone else (systemd
// socket activation) instead of binding the udp:// listeners.
func WithPacketConns(pcs []net.PacketConn) Option {
	return func(o *options) { o.activated = pcs }
}

// New binds the configured endpoints and starts serving. cfg must be
// validated. Close stops everything New started.
func New(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (*Proxy, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
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
	})
	p.dtlsUp = newDTLSOrigins(log.With("component", "upstream", "transport", "dtls"))
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
	if err := p.listen(ctx, o.activated); err != nil {
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
	return !c.router.forwards(r.Msg) && (p.broker == nil || !p.broker.Owns(r.Msg))
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
	return c != nil && !m.Options.Has(coap.Observe) && c.router.forwards(m) &&
		(p.broker == nil || !p.broker.Owns(m)) && !c.group.owns(m)
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

func (p *Proxy) brokerLinks() []string {
	if p.broker == nil {
		return nil
	}
	return p.broker.Links()
}

// Broker is the pub-sub broker, nil unless enabled.
func (p *Proxy) Broker() *pubsub.Broker { return p.broker }

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
	// The broker comes after the hub: a subscription is an observation
	// the broker serves as its origin, so the hub's fan-out, numbering
	// and latest-wins delivery apply to subscribers too.
	owned := func(m *coap.Message) bool { return p.broker != nil && p.broker.Owns(m) }
	stages := []stage{
		newAmp(p.amp, verified, p.isPlugin, r.forwards),
		newAccess(cfg.Proxy),
		newHopLimit(cfg.Proxy, p.log.With("component", "hoplimit"), r.forwards),
		guard,
		group.stage,
		newLocal(cfg, r.forwards, owned, p.brokerLinks),
	}
	if p.broker != nil {
		// The broker's access lists go before the hub, which lets a
		// subscriber join an observation it holds without the broker.
		stages = append(stages, p.broker.Gate)
	}
	stages = append(stages, p.hub.Stage)
	if p.broker != nil {
		stages = append(stages, p.broker.Stage)
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

// Reload swaps in what a new configuration changes of the request path:
// [proxy] allow, clients, timeout, next_hop, hop_limit, name, rate, burst,
// verified, verified_for, max_verified, echo_lifetime, max_inflight,
// max_inflight_per_client, the routes, [groupcomm] and the [[group]] tables (whose
// radios must be running ones); and the DTLS listeners' keys, re-read from their files,
// for new handshakes, as long as they are of the kinds the listeners
// started with (DTLS.SetKeys). Sockets, radios, the cache, observers, the broker and
// plugins stay as they are; changes to their sections are reported in the
// returned list and need a restart. An invalid cfg changes nothing. The
// rate limiter starts afresh.
func (p *Proxy) Reload(cfg Config) (needsRestart []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	old := p.chain.Load().cfg
	if cfg.Proxy.Name == "" {
		cfg.Proxy.Name = old.Proxy.Name
	}
	// New DTLS keys (a renewed certificate, a changed PSK file) apply to
	// the next handshakes; a different kind of key needs new listeners.
	var keys DTLSKeys
	newKind := false
	if len(p.dtls) > 0 || p.tls != nil {
		if keys, err = cfg.Proxy.dtlsKeys(); err != nil {
			return nil, err
		}
	}
	if len(p.dtls) > 0 {
		newKind = !p.dtls[0].sameKind(keys) // every listener has the same keys
	}
	if p.tls != nil && keys.Certificate == nil {
		newKind = true // the TLS listeners cannot go without one
	}
	if !slices.Equal(cfg.Proxy.Listen, old.Proxy.Listen) || newKind {
		needsRestart = append(needsRestart, "proxy.listen/psk_file/cert_file/key_file/client_ca_file")
	}
	if cfg.Proxy.Keepalive != old.Proxy.Keepalive || cfg.Proxy.MaxMessageSize != old.Proxy.MaxMessageSize ||
		cfg.Proxy.MaxConnections != old.Proxy.MaxConnections || cfg.Proxy.MaxHandshakes != old.Proxy.MaxHandshakes ||
		!slices.Equal(cfg.Proxy.WSOrigins, old.Proxy.WSOrigins) {
		// The stream listeners' connections keep the settings they
		// started with.
		needsRestart = append(needsRestart, "proxy.keepalive/max_message_size/max_connections/max_handshakes/ws_origins")
	}
	for name, changed := range map[string]bool{
		"radio":   !reflect.DeepEqual(cfg.Radio, old.Radio),
		"cache":   cfg.Cache != old.Cache,
		"observe": cfg.Observe != old.Observe,
		"pubsub":  !reflect.DeepEqual(cfg.PubSub, old.PubSub),
		"metrics": cfg.Metrics != old.Metrics,
		"plugin":  !reflect.DeepEqual(cfg.Plugin, old.Plugin),
	} {
		if changed {
			needsRestart = append(needsRestart, name)
		}
	}
	slices.Sort(needsRestart)
	// Keep what cannot change live, so the chain matches what runs.
	cfg.Proxy.Listen = old.Proxy.Listen
	cfg.Proxy.Keepalive, cfg.Proxy.MaxMessageSize, cfg.Proxy.MaxConnections, cfg.Proxy.MaxHandshakes, cfg.Proxy.WSOrigins =
		old.Proxy.Keepalive, old.Proxy.MaxMessageSize, old.Proxy.MaxConnections, old.Proxy.MaxHandshakes, old.Proxy.WSOrigins
	if newKind {
		cfg.Proxy.PSKFile, cfg.Proxy.CertFile, cfg.Proxy.KeyFile, cfg.Proxy.ClientCAFile =
			old.Proxy.PSKFile, old.Proxy.CertFile, old.Proxy.KeyFile, old.Proxy.ClientCAFile
	}
	cfg.Radio, cfg.Cache, cfg.Observe, cfg.PubSub, cfg.Metrics, cfg.Plugin = old.Radio, old.Cache, old.Observe, old.PubSub, old.Metrics, old.Plugin
	c, err := p.buildChain(cfg)
	if err != nil {
		return nil, err
	}
	if !newKind {
		for _, d := range p.dtls {
			d.SetKeys(keys) // of the same kind: cannot fail
		}
		if p.tls != nil {
			p.tls.set(keys)
		}
	}
	p.amp.configure(cfg.Proxy)
	p.chain.Store(c)
	for _, e := range p.servers {
		e.SetInflightLimits(cfg.Proxy.MaxInflight, cfg.Proxy.MaxInflightPerClient, cfg.Proxy.Timeout.Duration)
	}
	for _, w := range cfg.Warnings() {
		p.log.Warn("configuration warning", "component", "config", "warning", w)
	}
	return needsRestart, nil
}

// ReloadFile reads the configuration at path and applies it as Reload
// does. Either way the outcome counts in gatewayd_reloads_total.
func (p *Proxy) ReloadFile(path string) (needsRestart []string, err error) {
	cfg, err := Load(path)
	if err == nil {
		needsRestart, err = p.Reload(cfg)
	}
	outcome := reloadSuccess
	if err != nil {
		outcome = reloadFailure
	}
	p.metrics.reloads.WithLabelValues(outcome).Inc()
	return needsRestart, err
}
