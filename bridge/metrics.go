package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opaque-edge/gatewayd/coap"
)

// MetricsConfig is the [metrics] section: the admin endpoint with
// Prometheus metrics (/metrics) and a JSON status (/status) for
// `gatewayctl status`. Loopback by default; "" disables it.
type MetricsConfig struct {
	Listen string `toml:"listen"`
}

// DefaultMetricsListen is the admin endpoint's default address.
const DefaultMetricsListen = "127.0.0.1:9683"

// metrics are the proxy's own instruments; component counters are read
// from their Stats at scrape time by collector.
type metrics struct {
	requests *prometheus.CounterVec   // by method and response code
	latency  *prometheus.HistogramVec // upstream exchange time by transport
	// byCode holds the counter of requests for each method (0.01-0.07)
	// and code once used: looking the labels up is most of what counting
	// a request costs.
	byCode [8][256]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

func newMetrics(reg *prometheus.Registry, p *Proxy) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_requests_total", Help: "Requests answered, by method and response code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatewayd_upstream_seconds",
			Help:    "Time of upstream exchanges, by transport.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"transport"}),
	}
	reg.MustRegister(m.requests, m.latency, &collector{p: p})
	return m
}

// countingWriter records the code a request was answered with.
type countingWriter struct {
	coap.ResponseWriter
	code coap.Code
}

func (w *countingWriter) WriteResponse(resp *coap.Message) error {
	if w.code == 0 {
		w.code = resp.Code
	}
	return w.ResponseWriter.WriteResponse(resp)
}

// Notify keeps observers working through the wrapper.
func (w *countingWriter) Notify(resp *coap.Message, con bool, done func(error)) error {
	nw, ok := w.ResponseWriter.(coap.NotifyWriter)
	if !ok {
		return errors.New("bridge: not observable")
	}
	return nw.Notify(resp, con, done)
}

func (w *countingWriter) Peer() netip.AddrPort { return w.ResponseWriter.(coap.NotifyWriter).Peer() }
func (w *countingWriter) Token() []byte        { return w.ResponseWriter.(coap.NotifyWriter).Token() }

// stage counts every request by method and the code it got.
func (m *metrics) stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if coap.Inline(ctx) {
			// The answer may come later (coap.Later): count it when the
			// request ends.
			lw := &laterCounter{w: w, m: m, method: r.Msg.Code}
			err := next.ServeCoAP(ctx, lw, r)
			if errors.Is(err, coap.ErrLater) {
				lw.later = true
				return err
			}
			m.count(r.Msg.Code, lw.code, err)
			return err
		}
		// The endpoint's writers report their code; others are wrapped. No
		// wrapper for the common case: an Observe hub keeps the writer of
		// every observer.
		var code coap.Code
		var err error
		if cr, ok := w.(coap.CodeReporter); ok {
			err = next.ServeCoAP(ctx, w, r)
			code = cr.Code()
		} else {
			cw := &countingWriter{ResponseWriter: w}
			var out coap.ResponseWriter = cw
			if _, ok := w.(coap.NotifyWriter); !ok {
				out = plainWriter{cw}
			}
			err = next.ServeCoAP(ctx, out, r)
			code = cw.code
		}
		m.count(r.Msg.Code, code, err)
		return err
	})
}

// count counts a request that ended with code, or with err when it was
// not answered.
func (m *metrics) count(method, code coap.Code, err error) {
	if code == 0 && err != nil {
		code = coap.InternalServerError
		var ce *coap.Error
		if errors.As(err, &ce) {
			code = ce.Code
		}
	}
	if method >= 8 {
		m.requests.WithLabelValues(method.String(), codeLabel(code)).Inc()
		return
	}
	slot := &m.byCode[method][code]
	ref := slot.Load()
	if ref == nil {
		ref = &counterRef{m.requests.WithLabelValues(method.String(), codeLabel(code))}
		slot.Store(ref)
	}
	ref.c.Inc()
}

// laterCounter counts a request served on an endpoint's reader, which may
// be answered after the stage returned (coap.ErrLater): then it counts at
// Finish, which ends every such request.
type laterCounter struct {
	w      coap.ResponseWriter
	m      *metrics
	method coap.Code
	later  bool      // set before the answer can come (coap.Later)
	code   coap.Code // of the first response written
}

func (c *laterCounter) WriteResponse(resp *coap.Message) error {
	if c.code == 0 && resp != nil {
		c.code = resp.Code
	}
	return c.w.WriteResponse(resp)
}

func (c *laterCounter) Finish(err error) {
	if c.later {
		c.later = false // once
		c.m.count(c.method, c.code, err)
	}
	coap.Finish(c.w, err)
}

// plainWriter hides Notify from a writer that cannot notify.
type plainWriter struct{ w *countingWriter }

func (p plainWriter) WriteResponse(resp *coap.Message) error { return p.w.WriteResponse(resp) }

// codeLabels are the "c.dd" labels of every code, made once.
var codeLabels = func() (l [256]string) {
	for i := range l {
		c := coap.Code(i)
		l[i] = fmt.Sprintf("%d.%02d", c.Class(), c.Detail())
	}
	l[0] = "none"
	return l
}()

func codeLabel(c coap.Code) string { return codeLabels[c] }

// collector turns the components' Stats into metrics at scrape time.
type collector struct{ p *Proxy }

var (
	descEndpoint = prometheus.NewDesc("gatewayd_endpoint_datagrams_total", "Message layer counters per listener.", []string{"listen", "counter"}, nil)
	descCache    = prometheus.NewDesc("gatewayd_cache_total", "Cache counters: hits, misses, revalidations, evictions, ...", []string{"counter"}, nil)
	descCacheNow = prometheus.NewDesc("gatewayd_cache_bytes", "Bytes held by the cache.", nil, nil)
	descObsNow   = prometheus.NewDesc("gatewayd_observers", "Observers registered now.", nil, nil)
	descUpObsNow = prometheus.NewDesc("gatewayd_upstream_observations", "Upstream observations now.", nil, nil)
	descObs      = prometheus.NewDesc("gatewayd_observe_total", "Observe hub counters.", []string{"counter"}, nil)
	descRadioUp  = prometheus.NewDesc("gatewayd_radio_up", "1 when the radio is up.", []string{"radio"}, nil)
	descRadio    = prometheus.NewDesc("gatewayd_radio_total", "Radio counters: frames tx/rx, errors, reconnects, reassembly drops.", []string{"radio", "counter"}, nil)
	descTopics   = prometheus.NewDesc("gatewayd_pubsub_topics", "Pub-sub broker topics now.", nil, nil)
	descPubSub   = prometheus.NewDesc("gatewayd_pubsub_total", "Pub-sub broker counters.", []string{"counter"}, nil)
	descPlugUp   = prometheus.NewDesc("gatewayd_plugin_up", "1 when the plugin runs.", []string{"plugin"}, nil)
	descPlugin   = prometheus.NewDesc("gatewayd_plugin_total", "Plugin counters: restarts, failures, requests, unavailable, log_dropped, callbacks, observes, observe_skipped.", []string{"plugin", "counter"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEndpoint, descCache, descCacheNow, descObsNow, descUpObsNow, descObs, descRadioUp, descRadio, descTopics, descPubSub, descPlugUp, descPlugin} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, e := range c.p.servers {
		s := e.Stats()
		l := c.p.labels[i]
		for name, v := range map[string]uint64{
			"received": s.Received, "sent": s.Sent, "malformed": s.Malformed, "duplicates": s.Duplicates,
			"retransmissions": s.Retransmissions, "timeouts": s.Timeouts, "busy": s.Busy, "refused": s.Refused,
			"inline": s.Inline, "reads": s.Reads,
			"icmp": s.ICMP, "unreachable": s.Unreachable,
		} {
			counter(descEndpoint, v, l, name)
		}
	}
	cs := c.p.cache.Stats()
	for name, v := range map[string]uint64{
		"hits": cs.Hits, "misses": cs.Misses, "revalidations": cs.Revalidations, "evictions": cs.Evictions,
		"coalesced": cs.Coalesced, "stored": cs.Stored, "invalidated": cs.Invalidated,
	} {
		counter(descCache, v, name)
	}
	ch <- prometheus.MustNewConstMetric(descCacheNow, prometheus.GaugeValue, float64(cs.Bytes))
	hs := c.p.hub.Stats()
	ch <- prometheus.MustNewConstMetric(descObsNow, prometheus.GaugeValue, float64(hs.Observers))
	ch <- prometheus.MustNewConstMetric(descUpObsNow, prometheus.GaugeValue, float64(hs.Upstreams))
	for name, v := range map[string]uint64{
		"notifications_in": hs.NotificationsIn, "notifications_out": hs.NotificationsOut,
		"dropped_stale": hs.DroppedStale, "deregistrations": hs.Deregistrations, "skipped": hs.Skipped,
		"over_limit": hs.OverLimit, "protected_expired": hs.ProtectedExpired,
		"rejected": hs.Rejected, "unconfirmed": hs.Unconfirmed, "unreachable": hs.Unreachable,
	} {
		counter(descObs, v, name)
	}
	if b := c.p.broker; b != nil {
		bs := b.Stats()
		ch <- prometheus.MustNewConstMetric(descTopics, prometheus.GaugeValue, float64(bs.Topics))
		for name, v := range map[string]uint64{
			"publications": bs.Publications, "subscribers_informed": bs.SubscribersInformed, "rejected": bs.Rejected, "expired": bs.Expired,
		} {
			counter(descPubSub, v, name)
		}
	}
	if h := c.p.plugins; h != nil {
		for _, ps := range h.Stats() {
			up := 0.0
			if ps.Up {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descPlugUp, prometheus.GaugeValue, up, ps.Name)
			for name, v := range map[string]uint64{
				"restarts": ps.Restarts, "failures": ps.Failures, "requests": ps.Requests, "unavailable": ps.Unavail,
				"log_dropped": ps.LogDropped, "callbacks": ps.Callbacks, "observes": ps.Observes,
				"observe_skipped": ps.ObserveSkipped,
			} {
				counter(descPlugin, v, ps.Name, name)
			}
		}
	}
	for _, r := range c.p.radios {
		rc := r.r.Counters()
		up := 0.0
		if rc.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descRadioUp, prometheus.GaugeValue, up, r.r.Name())
		for name, v := range map[string]uint64{
			"frames_tx": rc.Conn.FramesTx, "frames_rx": rc.Conn.FramesRx, "tx_errors": rc.Link.TxErrors,
			"decode_errors": rc.Conn.DecodeErrors, "reconnects": rc.Link.Reconnects,
			"reassembly_drops": rc.Conn.ReassemblyDrops, "queue_drops": rc.Conn.QueueDrops,
		} {
			counter(descRadio, v, r.r.Name(), name)
		}
	}
}

// Status is the snapshot /status serves and `gatewayctl status` shows.
type Status struct {
	Listen  []string              `json:"listen"`
	Uptime  string                `json:"uptime"`
	Cache   any                   `json:"cache"`
	Observe any                   `json:"observe"`
	Radios  map[string]any        `json:"radios"`
	Clients map[string]coap.Stats `json:"endpoints"`
}

// Status returns a snapshot of the proxy.
func (p *Proxy) Status() Status {
	s := Status{Uptime: time.Since(p.started).Round(time.Second).String(), Cache: p.cache.Stats(), Observe: p.hub.Stats(),
		Radios: map[string]any{}, Clients: map[string]coap.Stats{}}
	for i, e := range p.servers {
		s.Listen = append(s.Listen, p.addrs[i].String())
		s.Clients[p.labels[i]] = e.Stats()
	}
	for _, r := range p.radios {
		s.Radios[r.r.Name()] = r.r.Counters()
	}
	return s
}

// ServeAdmin starts the admin endpoint (/metrics, /status) on addr; Close
// stops it. It returns the bound address.
func (p *Proxy) ServeAdmin(ctx context.Context, addr string) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("bridge: metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	// Profiles for the operator (loopback by default, like the rest).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Status())
	})
	p.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	p.adminAddr = l.Addr().String()
	p.adminDone = make(chan struct{})
	go func() {
		defer close(p.adminDone)
		p.admin.Serve(l)
	}()
	return p.adminAddr, nil
}

// Registry is the proxy's Prometheus registry.
func (p *Proxy) Registry() *prometheus.Registry { return p.registry }
