package bridge

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio"
)

// Console listing bounds: what one snapshot shows at most, whatever the
// nodes, clients and topics.
const (
	consoleMaxObserved = 100
	consoleMaxTopics   = 100
)

// WithRecent shows the warnings and errors r keeps on the console ("last
// errors"); the caller puts r's handler in front of the logger it passes
// to New.
func WithRecent(r *console.Recent) Option {
	return func(o *options) { o.recent = r }
}

// withConsoleTicks samples the console's history on the ticks of c (tests).
func withConsoleTicks(c <-chan time.Time) Option {
	return func(o *options) { o.consoleTicks = c }
}

// consoleState is the console's part of a Proxy, set by ServeAdmin.
type consoleState struct {
	srv     *console.Server
	history *console.History
	stop    context.CancelFunc
	done    chan struct{} // closed when the sampler returned
}

// adminHandler is the admin endpoint's handler: mux, with the console
// on it unless [metrics] console is off, behind the token when
// [metrics] token_file is set.
func (p *Proxy) adminHandler(mux *http.ServeMux) (http.Handler, error) {
	var token string
	if f := p.cfg.Metrics.TokenFile; f != "" {
		t, err := console.ReadToken(f)
		if err != nil {
			return nil, fmt.Errorf("bridge: metrics: %w", err)
		}
		token = t
	}
	if p.cfg.Metrics.Console {
		h := console.NewHistory(0, 0)
		srv := console.New(console.Config{Snapshot: p.Snapshot, History: h, AddressHostOnly: token == ""})
		srv.Register(mux)
		p.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatewayd_console_streams", Help: "Console event streams (Server-Sent Events) open now.",
		}, func() float64 { return float64(srv.Streams()) }))
		ctx, stop := context.WithCancel(context.Background())
		cs := &consoleState{srv: srv, history: h, stop: stop, done: make(chan struct{})}
		p.console = cs
		ticks := p.consoleTicks
		var t *time.Ticker
		if ticks == nil {
			t = time.NewTicker(h.Interval())
			ticks = t.C
		}
		go func() {
			defer close(cs.done)
			if t != nil {
				defer t.Stop()
			}
			p.sample(ctx, ticks)
		}()
	}
	return console.Authorize(func() string { return token }, mux), nil
}

// AdminAddr is the admin endpoint's bound address; "" unless ServeAdmin
// serves it.
func (p *Proxy) AdminAddr() string { return p.adminAddr }

// closeConsole ends the console's event streams and its sampler; before
// the admin server's Shutdown, which would wait for the streams.
func (p *Proxy) closeConsole() {
	if cs := p.console; cs != nil {
		cs.srv.Close()
		cs.stop()
		<-cs.done
	}
}

// sample adds a sample to the console's history at start and on each
// tick: the only work the console does while nobody looks, a read of
// counters the proxy keeps anyway.
func (p *Proxy) sample(ctx context.Context, ticks <-chan time.Time) {
	h := p.console.history
	for {
		h.Add(p.consoleSample(time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}

func (p *Proxy) consoleSample(now time.Time) console.Sample {
	s := console.Sample{Time: now, Requests: p.requestCount()}
	for _, r := range p.radios {
		for _, ns := range r.r.NodeStats() {
			n := nodeOf(r.r.Name(), ns)
			s.Nodes = append(s.Nodes, console.NodeSample{Key: console.NodeKey(n.Radio, n.MAC), RSSI: n.RSSI, LQI: n.LQI,
				LastHeard: timeOrZero(n.LastHeard)})
		}
	}
	return s
}

func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// requestCount sums gatewayd_requests_total over its labels: read from
// the counters the chain keeps, so that the console adds nothing to a
// request's way.
func (p *Proxy) requestCount() uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		p.metrics.requests.Collect(ch)
		close(ch)
	}()
	var sum float64
	var m dto.Metric
	for c := range ch {
		m.Reset()
		if c.Write(&m) == nil && m.Counter != nil {
			sum += m.Counter.GetValue()
		}
	}
	return uint64(sum)
}

// Snapshot is the gateway's state now, as the console and /api/v1/status
// show it.
func (p *Proxy) Snapshot() console.Snapshot {
	now := time.Now()
	st := p.Status()
	s := console.Snapshot{
		APIVersion: console.APIVersion, Version: st.Version, GoVersion: runtime.Version(),
		Started: p.started, Now: now, UptimeSeconds: now.Sub(p.started).Seconds(),
		Listeners: []console.Listener{}, Radios: []console.Radio{}, Nodes: []console.Node{}, Routes: []console.Route{},
		Plugins: []console.Plugin{}, Errors: []console.LogEntry{}, Requests: p.requestCount(),
	}
	if cs := p.console; cs != nil {
		s.RequestRate = cs.history.Rate()
	}
	for _, l := range st.Listeners {
		es := st.Endpoints[l.Listen]
		s.Listeners = append(s.Listeners, console.Listener{Listen: l.Listen, Addr: l.Addr,
			Received: es.Received, Sent: es.Sent, Malformed: es.Malformed, Refused: es.Refused})
	}
	names := p.nodeNames()
	for _, r := range p.radios {
		rc := r.r.Config()
		c := r.r.Counters()
		var dropped uint64
		for _, v := range c.Conn.Drops {
			dropped += v
		}
		s.Radios = append(s.Radios, console.Radio{
			Name: rc.Name, Driver: rc.Driver, Device: rc.Device, State: console.State(c.Up),
			Channel: int(rc.Channel), PANID: int(rc.PANID), Prefix: rc.Prefix.String(), RCPVersion: r.r.Firmware(),
			FramesTx: c.Conn.FramesTx, FramesRx: c.Conn.FramesRx, TxErrors: c.Link.TxErrors,
			DecodeErrors: c.Conn.DecodeErrors, Dropped: dropped, Reconnects: c.Link.Reconnects, LastError: c.Link.LastError,
		})
		for _, ns := range r.r.NodeStats() {
			s.Nodes = append(s.Nodes, nodeOf(rc.Name, ns))
		}
	}
	nameNodes(s.Nodes, names)
	for _, rt := range st.Routes {
		s.Routes = append(s.Routes, console.Route{Name: rt.Name, Target: rt.Target})
	}
	hs := st.Observe
	s.Observe = console.Observe{Observers: hs.Observers, Upstreams: hs.Upstreams, NotificationsIn: hs.NotificationsIn,
		NotificationsOut: hs.NotificationsOut, Resources: []console.Observed{}}
	for _, o := range p.hub.Observations(consoleMaxObserved) {
		s.Observe.Resources = append(s.Observe.Resources, console.Observed{Resource: o.Resource, Observers: o.Observers, Protected: o.Protected})
	}
	cst := st.Cache
	s.Cache = console.Cache{Entries: cst.Entries, Bytes: cst.Bytes, Hits: cst.Hits, Misses: cst.Misses, Evictions: cst.Evictions}
	if n := cst.Hits + cst.Misses; n > 0 {
		r := float64(cst.Hits) / float64(n)
		s.Cache.HitRate = &r
	}
	if p.broker != nil && st.PubSub != nil {
		s.PubSub = &console.PubSub{Topics: st.PubSub.Topics, Subscriptions: st.PubSub.Subscriptions,
			Publications: st.PubSub.Publications, TopicList: topicsOf(p.broker.Topics(consoleMaxTopics))}
	}
	for _, pl := range st.Plugins {
		cp := console.Plugin{Name: pl.Name, Path: pl.Path, State: console.State(pl.Up), PID: pl.PID, Starts: pl.Starts,
			Restarts: pl.Restarts, Failures: pl.Failures, LastError: pl.LastError}
		if !pl.RetryAt.IsZero() {
			t := pl.RetryAt
			cp.RetryAt = &t
		}
		s.Plugins = append(s.Plugins, cp)
	}
	if p.recent != nil {
		s.Errors = p.recent.Entries()
	}
	return s
}

// nodeNames names nodes by address: the resource directory's
// registrations, each endpoint name by the address of its base.
func (p *Proxy) nodeNames() map[netip.Addr]string {
	if p.rd == nil {
		return nil
	}
	names := map[netip.Addr]string{}
	for _, e := range p.rd.Endpoints() {
		if e.Addr.IsValid() {
			names[e.Addr] = e.Name
		}
	}
	return names
}

// nameNodes gives each node the name of one of its addresses.
func nameNodes(nodes []console.Node, names map[netip.Addr]string) {
	if len(names) == 0 {
		return
	}
	for i := range nodes {
		for _, a := range nodes[i].Addrs {
			if ad, err := netip.ParseAddr(a); err == nil && names[ad] != "" {
				nodes[i].Name = names[ad]
				break
			}
		}
	}
}

func nodeOf(radioName string, ns radio.NodeStats) console.Node {
	n := console.Node{Radio: radioName, MAC: ns.MAC.String(), Addrs: []string{}, FramesRx: ns.FramesRx, FramesTx: ns.FramesTx}
	if ns.Addr.IsValid() {
		n.Addrs = append(n.Addrs, ns.Addr.String())
	}
	if !ns.LastHeard.IsZero() {
		t := ns.LastHeard
		n.LastHeard = &t
		if ns.RSSI != 127 { // 127: the radio did not tell
			r := int(ns.RSSI)
			n.RSSI = &r
		}
		l := int(ns.LQI)
		n.LQI = &l
	}
	return n
}

func topicsOf(ts []pubsub.TopicInfo) []console.Topic {
	out := make([]console.Topic, 0, len(ts))
	for _, t := range ts {
		ct := console.Topic{Name: t.Name, Path: t.Path, DataPath: t.DataPath, FullyCreated: t.FullyCreated, Subscriptions: t.Subscriptions}
		if t.ContentFormat >= 0 {
			cf := t.ContentFormat
			ct.ContentFormat = &cf
		}
		if !t.LastPublished.IsZero() {
			lp := t.LastPublished
			ct.LastPublished = &lp
		}
		out = append(out, ct)
	}
	return out
}
