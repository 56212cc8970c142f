package bridge

// The snapshot /status serves (ServeAdmin, in metrics.go).

import (
	"runtime"
	"time"

	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/rd"
)

// Status is the snapshot /status serves and `gatewayctl status` shows:
// which gatewayd runs and since when, what the effective configuration
// serves (listeners, routes, radios, plugins) and in what state, and the
// components' counters.
type Status struct {
	Version       string           `json:"version"`
	GoVersion     string           `json:"goversion"`
	Started       time.Time        `json:"started"`
	Uptime        string           `json:"uptime"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Listen        []string         `json:"listen"` // bound addresses, in the order of Listeners
	Listeners     []ListenerStatus `json:"listeners"`
	Routes        []RouteConfig    `json:"routes"`
	Radios        []RadioStatus    `json:"radios"`
	Plugins       []PluginStatus   `json:"plugins"`
	Cache         cache.Stats      `json:"cache"`
	Observe       observe.Stats    `json:"observe"`
	PubSub        *pubsub.Stats    `json:"pubsub,omitempty"` // nil unless [pubsub] enabled
	RD            *RDStatus        `json:"rd,omitempty"`     // nil unless [rd] enabled
	// Endpoints are the listeners' message-layer counters, by listener.
	Endpoints map[string]coap.Stats `json:"endpoints"`
}

// RDStatus is the resource directory: its counters and its
// registrations, ordered by name.
type RDStatus struct {
	Stats     rd.Stats      `json:"stats"`
	Endpoints []rd.Endpoint `json:"endpoints"`
}

// ListenerStatus is one listener: the configuration entry (or the
// socket systemd passed) and the address it is bound to.
type ListenerStatus struct {
	Listen string `json:"listen"`
	Addr   string `json:"addr"`
}

// RadioStatus is one [[radio]] and its state.
type RadioStatus struct {
	Name     string         `json:"name"`
	Driver   string         `json:"driver"`
	Device   string         `json:"device,omitempty"`
	Prefix   string         `json:"prefix"`
	Up       bool           `json:"up"`
	Counters radio.Counters `json:"counters"`
}

// PluginStatus is one [[plugin]] and its state.
type PluginStatus struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	Up        bool      `json:"up"`
	PID       int       `json:"pid,omitempty"`
	Starts    uint64    `json:"starts"`
	Restarts  uint64    `json:"restarts"`
	Failures  uint64    `json:"start_failures"`
	LastError string    `json:"last_error,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"` // while down: the next start
}

// Status returns a snapshot of the proxy.
func (p *Proxy) Status() Status {
	now := time.Now()
	cfg := p.cfg
	if c := p.chain.Load(); c != nil {
		cfg = c.cfg // the routes of the last reload
	}
	s := Status{
		Version: p.version, GoVersion: runtime.Version(), Started: p.started,
		Uptime: now.Sub(p.started).Round(time.Second).String(), UptimeSeconds: now.Sub(p.started).Seconds(),
		Routes: append([]RouteConfig{}, cfg.Route...), Radios: []RadioStatus{}, Plugins: []PluginStatus{},
		Cache: p.cache.Stats(), Observe: p.hub.Stats(), Endpoints: map[string]coap.Stats{},
	}
	for i, e := range p.servers {
		s.Listen = append(s.Listen, p.addrs[i].String())
		s.Listeners = append(s.Listeners, ListenerStatus{Listen: p.labels[i], Addr: p.addrs[i].String()})
		s.Endpoints[p.labels[i]] = e.Stats()
	}
	for _, r := range p.radios {
		rc := r.r.Config()
		c := r.r.Counters()
		s.Radios = append(s.Radios, RadioStatus{Name: rc.Name, Driver: rc.Driver, Device: rc.Device,
			Prefix: rc.Prefix.String(), Up: c.Up, Counters: c})
	}
	if p.plugins != nil {
		for _, ps := range p.plugins.Stats() {
			s.Plugins = append(s.Plugins, PluginStatus{Name: ps.Name, Path: ps.Path, Up: ps.Up, PID: ps.PID,
				Starts: ps.Starts, Restarts: ps.Restarts, Failures: ps.Failures, LastError: ps.LastError, RetryAt: ps.RetryAt})
		}
	}
	if p.broker != nil {
		bs := p.broker.Stats()
		s.PubSub = &bs
	}
	if p.rd != nil {
		s.RD = &RDStatus{Stats: p.rd.Stats(), Endpoints: p.rd.Endpoints()}
	}
	return s
}
