// Package bridge is gatewayd's CoAP proxy: the endpoints clients talk to,
// the request chain in its fixed order, routing, and the upstream
// transports that reach origin servers and radio nodes.
//
// The chain, fixed here and nowhere else:
//
//	access → hop-limit → guard → local → observe → pubsub → cache → route → upstream
//
// access drops unknown clients and rate-limits known ones; hop-limit
// enforces RFC 8768; the guard marks OSCORE requests so that later stages
// only read or rewrite outer options; local answers requests for the proxy
// itself; route picks the target (Proxy-Uri, Proxy-Scheme, reverse route,
// next hop) and rewrites the options as PR1.1/PR1.2 allow; upstream sends
// the request and writes the response back unmodified (PR1.3). The cache
// (RFC 7252 §5.6, PR3.x) sits before route, and the Observe hub (RFC 7641
// §5, PR4.x) before the cache.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio"
	_ "github.com/opaque-edge/gatewayd/radio/drivers" // "spinel" and "sim"
)

// Proxy is a running proxy: its endpoints, chain and upstreams.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	chain   coap.Handler
	router  *router
	up      *ipUpstream
	radios  []*radioUpstream
	cache   *cache.Cache
	hub     *observe.Hub
	broker  *pubsub.Broker // nil unless [pubsub] enabled
	started time.Time

	registry  *prometheus.Registry
	metrics   *metrics
	admin     *http.Server
	adminAddr string
	adminDone chan struct{}
	servers   []*coap.Endpoint
	addrs     []netip.AddrPort

	closeOnce sync.Once
}

// New binds the configured endpoints and starts serving. cfg must be
// validated. Close stops everything New started.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Proxy.Name == "" {
		cfg.Proxy.Name, _ = os.Hostname()
		if cfg.Proxy.Name == "" {
			cfg.Proxy.Name = "gatewayd"
		}
	}
	p := &Proxy{cfg: cfg, log: log, started: time.Now(), registry: prometheus.NewRegistry()}
	up, err := newIPUpstream(ctx, log.With("component", "upstream"))
	if err != nil {
		return nil, err
	}
	p.up = up
	p.cache = cache.New(cfg.Cache, cache.WithLogger(log.With("component", "cache")))
	p.hub = observe.New(cfg.Observe,
		observe.WithLogger(log.With("component", "observe")),
		observe.WithKey(hubKey),
		observe.WithOnNotify(func(key string, n *coap.Message) {
			// Notifications keep the cache entry current (RFC 7641 §5).
			if k, ok := cacheKeyOf(key); ok {
				p.cache.Store(k, n)
			}
		}))
	if cfg.PubSub.Enabled {
		b, err := pubsub.New(cfg.PubSub, pubsub.WithLogger(log.With("component", "pubsub")))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("bridge: %w", err)
		}
		p.broker = b
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
			Logger:  log.With("component", "endpoint", "radio", rc.Name),
		})
		p.radios = append(p.radios, &radioUpstream{r: r, e: e})
	}
	p.metrics = newMetrics(p.registry, p)
	chain, err := p.buildChain()
	if err != nil {
		up.Close()
		return nil, err
	}
	p.chain = chain
	clients, _ := parsePrefixes(cfg.Proxy.Clients)
	accept := func(peer netip.AddrPort) bool { return contains(clients, peer.Addr()) }
	for _, l := range cfg.Proxy.Listen {
		scheme, addr, _ := parseListen(l)
		var t coap.Transport
		switch scheme {
		case "udp":
			u, err := coap.ListenUDP(ctx, addr.String())
			if err != nil {
				p.Close()
				return nil, fmt.Errorf("bridge: %w", err)
			}
			addr = u.LocalAddr()
			t = u
		case "dtls":
			keys, err := LoadPSK(cfg.Proxy.PSKFile)
			if err != nil {
				p.Close()
				return nil, fmt.Errorf("bridge: psk_file: %w", err)
			}
			d, err := ListenDTLS(ctx, addr, keys, log.With("component", "dtls"))
			if err != nil {
				p.Close()
				return nil, err
			}
			addr = d.LocalAddr()
			t = d
		}
		e := coap.NewEndpoint(t, coap.EndpointConfig{
			Handler: chain,
			Secure:  scheme == "dtls",
			Accept:  accept,
			Logger:  log.With("component", "endpoint", "listen", l),
		})
		p.servers = append(p.servers, e)
		p.addrs = append(p.addrs, addr)
		log.Info("listening", "component", "proxy", "scheme", scheme, "addr", addr)
	}
	return p, nil
}

// serveChain hands a request to the chain once it is built (radio
// endpoints start before it is).
func (p *Proxy) serveChain(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	if p.chain == nil {
		return coap.Errorf(coap.ServiceUnavailable, "starting")
	}
	return p.chain.ServeCoAP(ctx, w, r)
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
		return "c" + string(k.ID[:]) + string(k.URI[:]), true
	}
	return observe.DefaultKey(r)
}

func cacheKeyOf(key string) (cache.Key, bool) {
	var k cache.Key
	if len(key) != 1+len(k.ID)+len(k.URI) || key[0] != 'c' {
		return k, false
	}
	copy(k.ID[:], key[1:])
	copy(k.URI[:], key[1+len(k.ID):])
	return k, true
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
func (p *Proxy) Handler() coap.Handler { return p.chain }

// Close stops the listeners and upstreams and waits for them. Idempotent.
func (p *Proxy) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		for _, e := range p.servers {
			if err := e.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if p.admin != nil {
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
		for _, r := range p.radios {
			if err := r.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// stage is one link of the chain: it serves or calls next.
type stage func(next coap.Handler) coap.Handler

// buildChain assembles the chain in its one fixed order.
func (p *Proxy) buildChain() (coap.Handler, error) {
	r, err := newRouter(p.cfg, p.up, p.radios)
	if err != nil {
		return nil, err
	}
	p.router = r
	r.latency = p.metrics.latency
	// The broker comes after the hub: a subscription is an observation
	// the broker serves as its origin, so the hub's fan-out, numbering
	// and latest-wins delivery apply to subscribers too.
	local := func(m *coap.Message) bool { return r.forwards(m) || p.broker != nil && p.broker.Owns(m) }
	stages := []stage{
		newAccess(p.cfg.Proxy),
		newHopLimit(p.cfg.Proxy, p.log.With("component", "hoplimit"), r.forwards),
		guard,
		newLocal(p.cfg, local, p.brokerLinks),
		p.hub.Stage,
	}
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
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		return first.ServeCoAP(withExchange(ctx, req.Msg.Clone()), w, req)
	}), nil
}
