package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/rd"
)

// MetricsConfig is the [metrics] section: the admin endpoint with
// Prometheus metrics (/metrics) and a JSON status (/status) for
// `gatewayctl status`. Loopback by default; "" disables it.
type MetricsConfig struct {
	Listen string `toml:"listen"`
	// PProf serves Go's profiles under /debug/pprof/ on the same port.
	// Off by default: a CPU profile or trace costs the gateway CPU, and
	// whoever reaches the port (a remote Prometheus's network, once listen
	// is not loopback) could start one.
	PProf bool `toml:"pprof"`
	// Console serves the operator console (/, /api/v1/) on the same
	// port. On by default: it shows what /status and /metrics do, read
	// only, and costs nothing while nobody looks.
	Console bool `toml:"console"`
	// TokenFile, when set, is a file holding a bearer token that every
	// request to the admin endpoint must present (RFC 6750, or as the
	// password of HTTP Basic for a browser): for a listen address that
	// is not loopback.
	TokenFile string `toml:"token_file"`
}

// DefaultMetricsListen is the admin endpoint's default address.
const DefaultMetricsListen = "127.0.0.1:9683"

// metrics are the proxy's own instruments; component counters are read
// from their Stats at scrape time by collector.
type metrics struct {
	requests *prometheus.CounterVec   // by method and response code
	latency  *prometheus.HistogramVec // upstream exchange time by transport
	reloads  *prometheus.CounterVec   // by outcome
	// byCode holds the counter of requests for each method (0.01-0.07)
	// and code once used: looking the labels up is most of what counting
	// a request costs.
	byCode [8][256]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

// Reload outcomes, the values of gatewayd_reloads_total's label.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

func newMetrics(reg *prometheus.Registry, p *Proxy, version string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_requests_total", Help: "Requests answered, by method and response code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatewayd_upstream_duration_seconds",
			Help:    "Time of upstream exchanges, by transport.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"transport"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_reloads_total", Help: "Configuration reloads (SIGHUP), by outcome: success, or failure when the file was refused.",
		}, []string{"outcome"}),
	}
	// Both outcomes from the start, so that a first failure is an
	// increase and not a new series.
	m.reloads.WithLabelValues(reloadSuccess)
	m.reloads.WithLabelValues(reloadFailure)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gatewayd_build_info", Help: "Always 1; the labels say which gatewayd runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(m.requests, m.latency, m.reloads, build, &collector{p: p},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// stage counts every request by method and the code it got, when the
// request ends: at once, or at Finish for one answered later
// (coap.ErrLater).
func (m *metrics) stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if cr, ok := w.(coap.CodeReporter); ok && r.Msg.Options.Has(coap.Observe) {
			// No wrapper for a registration: an Observe hub keeps the
			// writer of every observer, and waits for the first
			// response itself.
			err := next.ServeCoAP(ctx, w, r)
			m.count(r.Msg.Code, cr.Code(), err)
			return err
		}
		cw, c := coap.WrapWriterWith[counter](w)
		c.m, c.method = m, r.Msg.Code
		err := next.ServeCoAP(ctx, cw, r)
		c.returned(cw.(coap.CodeReporter), err) // WrapWriter's writers are
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

// counter is the metrics stage's part of the writer it hands on: it counts
// the request once, when the stage returns or, for a request answered
// later, at Finish, whichever comes last. It is allocated with the
// writer for every request: it keeps no more than it must (the code is
// read from the writer), and its small fields sit together, so that the
// two fit a smaller size class.
type counter struct {
	coap.PassWrite
	m *metrics

	mu     sync.Mutex
	ferr   error // guarded by mu: Finish's error, when it came first
	method coap.Code
	state  counterState // guarded by mu
}

type counterState uint8

const (
	serving  counterState = iota // the stage has not returned
	later                        // it returned ErrLater; Finish counts
	finished                     // Finish came before the stage returned
	counted
)

// returned is called with what the stage returned, and the writer it
// handed on.
func (c *counter) returned(cw coap.CodeReporter, err error) {
	c.mu.Lock()
	st := c.state
	switch {
	case st == finished:
		err = c.ferr
	case errors.Is(err, coap.ErrLater):
		c.state = later
		c.mu.Unlock()
		return
	}
	c.state = counted
	c.mu.Unlock()
	c.m.count(c.method, cw.Code(), err)
}

func (c *counter) Finish(next coap.Next, err error) {
	c.mu.Lock()
	switch c.state {
	case serving:
		// Outside an endpoint, coap.Later starts the answer at once: it
		// may end before the stage has returned.
		c.state, c.ferr = finished, err
	case later:
		c.state = counted
		c.mu.Unlock()
		c.m.count(c.method, next.Code(), err)
		next.Finish(err)
		return
	}
	c.mu.Unlock()
	next.Finish(err)
}

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

// collector turns the components' Stats into metrics at scrape time: one
// family per meaning, named by Prometheus's conventions (base units, a
// counter ends in _total), labelled only by which listener, radio or
// plugin it is about.
type collector struct{ p *Proxy }

// stat is one family the collector reads from a component's Stats.
type stat[S any] struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(*S) float64
}

func counterOf[S any](name, help string, labels []string, get func(*S) uint64) stat[S] {
	return stat[S]{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue, func(s *S) float64 { return float64(get(s)) }}
}

func gaugeOf[S any](name, help string, labels []string, get func(*S) float64) stat[S] {
	return stat[S]{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue, get}
}

func up(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	byListen = []string{"listen"}
	byRadio  = []string{"radio"}
	byPlugin = []string{"plugin"}
	byOrigin = []string{"transport"} // "stream" (coap+tcp, coaps+tcp, coap+ws, coaps+ws) or "dtls" (coaps)

	endpointStats = []stat[coap.Stats]{
		counterOf("gatewayd_endpoint_datagrams_received_total", "Datagrams read by the listener.", byListen, func(s *coap.Stats) uint64 { return s.Received }),
		counterOf("gatewayd_endpoint_datagrams_sent_total", "Datagrams written by the listener, retransmissions included.", byListen, func(s *coap.Stats) uint64 { return s.Sent }),
		counterOf("gatewayd_endpoint_reads_total", "Reads that returned datagrams; datagrams received per read is the batching (recvmmsg).", byListen, func(s *coap.Stats) uint64 { return s.Reads }),
		counterOf("gatewayd_endpoint_malformed_datagrams_total", "Datagrams that did not decode as CoAP (dropped or answered with RST).", byListen, func(s *coap.Stats) uint64 { return s.Malformed }),
		counterOf("gatewayd_endpoint_refused_datagrams_total", "Datagrams dropped unanswered because the client is not in clients.", byListen, func(s *coap.Stats) uint64 { return s.Refused }),
		counterOf("gatewayd_endpoint_duplicate_messages_total", "Requests and confirmable responses recognised as duplicates (RFC 7252 §4.5).", byListen, func(s *coap.Stats) uint64 { return s.Duplicates }),
		counterOf("gatewayd_endpoint_retransmissions_total", "Confirmable messages retransmitted.", byListen, func(s *coap.Stats) uint64 { return s.Retransmissions }),
		counterOf("gatewayd_endpoint_transmission_timeouts_total", "Confirmable messages given up after MAX_RETRANSMIT.", byListen, func(s *coap.Stats) uint64 { return s.Timeouts }),
		counterOf("gatewayd_endpoint_resets_sent_total", "Reset messages sent.", byListen, func(s *coap.Stats) uint64 { return s.ResetsSent }),
		counterOf("gatewayd_endpoint_unmatched_responses_total", "Responses that matched no exchange.", byListen, func(s *coap.Stats) uint64 { return s.Unmatched }),
		counterOf("gatewayd_endpoint_busy_rejections_total", "Requests refused because too many were in progress.", byListen, func(s *coap.Stats) uint64 { return s.Busy }),
		counterOf("gatewayd_endpoint_client_busy_rejections_total", "Requests refused because their client had max_inflight_per_client in progress.", byListen, func(s *coap.Stats) uint64 { return s.ClientBusy }),
		counterOf("gatewayd_endpoint_separate_non_responses_total", "Separate responses sent non-confirmable because the client had max_inflight_per_client confirmable ones unacknowledged.", byListen, func(s *coap.Stats) uint64 { return s.SeparateNON }),
		gaugeOf("gatewayd_endpoint_requests_in_flight", "Requests in progress, each holding one of max_inflight.", byListen, func(s *coap.Stats) float64 { return float64(s.Inflight) }),
		counterOf("gatewayd_endpoint_local_requests_total", "Requests for the proxy itself, answered on the reader goroutine without taking one of max_inflight.", byListen, func(s *coap.Stats) uint64 { return s.Local }),
		counterOf("gatewayd_endpoint_icmp_reports_total", "ICMP errors read from the socket (Linux IP_RECVERR), vetted against what was sent or not (RFC 7252 §4.2).", byListen, func(s *coap.Stats) uint64 { return s.ICMP }),
		counterOf("gatewayd_endpoint_unreachable_exchanges_total", "Exchanges and notifications ended at once because the network reported their peer unreachable.", byListen, func(s *coap.Stats) uint64 { return s.Unreachable }),
		counterOf("gatewayd_endpoint_inline_requests_total", "Requests served on the reader goroutine that read them.", byListen, func(s *coap.Stats) uint64 { return s.Inline }),
	}
	streamStats = []stat[stream.Stats]{
		gaugeOf("gatewayd_stream_connections", "TCP, TLS and WebSocket connections open now (RFC 8323).", byListen, func(s *stream.Stats) float64 { return float64(s.Conns) }),
		counterOf("gatewayd_stream_connections_accepted_total", "Connections accepted.", byListen, func(s *stream.Stats) uint64 { return s.Accepted }),
		counterOf("gatewayd_stream_connections_refused_total", "Connections closed at once: the client is not in clients.", byListen, func(s *stream.Stats) uint64 { return s.Refused }),
		counterOf("gatewayd_stream_connections_over_limit_total", "Connections closed at once: max_connections or max_handshakes reached.", byListen, func(s *stream.Stats) uint64 { return s.OverLimit }),
		counterOf("gatewayd_stream_messages_received_total", "CoAP messages read, signalling included.", byListen, func(s *stream.Stats) uint64 { return s.Received }),
		counterOf("gatewayd_stream_messages_sent_total", "CoAP messages written, signalling included.", byListen, func(s *stream.Stats) uint64 { return s.Sent }),
		counterOf("gatewayd_stream_inline_requests_total", "Requests served on their connection's reader goroutine, answered from the upstream's reader.", byListen, func(s *stream.Stats) uint64 { return s.Inline }),
		counterOf("gatewayd_stream_malformed_messages_total", "Messages that did not decode (the connection is aborted) or had a reserved code.", byListen, func(s *stream.Stats) uint64 { return s.Malformed }),
		counterOf("gatewayd_stream_oversize_messages_total", "Messages over max_message_size: a request is answered 4.13, anything else aborts.", byListen, func(s *stream.Stats) uint64 { return s.Oversize }),
		counterOf("gatewayd_stream_messages_too_big_total", "Responses and notifications not sent because the client's CSM does not take their size.", byListen, func(s *stream.Stats) uint64 { return s.TooBig }),
		counterOf("gatewayd_stream_aborts_sent_total", "Abort messages sent (RFC 8323 §5.6).", byListen, func(s *stream.Stats) uint64 { return s.AbortsSent }),
		counterOf("gatewayd_stream_aborts_received_total", "Abort messages received.", byListen, func(s *stream.Stats) uint64 { return s.AbortsReceived }),
		counterOf("gatewayd_stream_releases_received_total", "Release messages received (RFC 8323 §5.5).", byListen, func(s *stream.Stats) uint64 { return s.Releases }),
		counterOf("gatewayd_stream_pings_received_total", "Ping messages answered with Pong (RFC 8323 §5.4).", byListen, func(s *stream.Stats) uint64 { return s.Pings }),
		counterOf("gatewayd_stream_overflow_closes_total", "Connections closed because their client did not read and 256 KiB waited to be sent.", byListen, func(s *stream.Stats) uint64 { return s.Overflow }),
		counterOf("gatewayd_stream_keepalive_closes_total", "Connections closed because a quiet client did not answer the keepalive Ping.", byListen, func(s *stream.Stats) uint64 { return s.KeepaliveClosed }),
	}
	originStats = []stat[poolStats]{
		gaugeOf("gatewayd_origin_connections", "Connections to origins open now (pooled, one per origin).", byOrigin, func(s *poolStats) float64 { return float64(s.Conns) }),
		counterOf("gatewayd_origin_dials_total", "Connections to origins dialled, handshake included.", byOrigin, func(s *poolStats) uint64 { return s.Dials }),
		counterOf("gatewayd_origin_dial_failures_total", "Dials to origins that failed (each answered 5.02, then backed off).", byOrigin, func(s *poolStats) uint64 { return s.DialFailures }),
		counterOf("gatewayd_origin_idle_closes_total", "Connections to origins closed after origin_idle with no exchange or observation.", byOrigin, func(s *poolStats) uint64 { return s.IdleCloses }),
	}
	cacheStats = []stat[cache.Stats]{
		gaugeOf("gatewayd_cache_entries", "Responses held by the cache.", nil, func(s *cache.Stats) float64 { return float64(s.Entries) }),
		gaugeOf("gatewayd_cache_bytes", "Bytes held by the cache.", nil, func(s *cache.Stats) float64 { return float64(s.Bytes) }),
		counterOf("gatewayd_cache_hits_total", "Requests answered from a fresh entry.", nil, func(s *cache.Stats) uint64 { return s.Hits }),
		counterOf("gatewayd_cache_misses_total", "Cacheable requests that found no fresh entry and went upstream.", nil, func(s *cache.Stats) uint64 { return s.Misses }),
		counterOf("gatewayd_cache_revalidations_total", "Stale entries validated upstream with their ETag (RFC 7252 §5.6.2).", nil, func(s *cache.Stats) uint64 { return s.Revalidations }),
		counterOf("gatewayd_cache_coalesced_requests_total", "Requests answered by an identical concurrent request's upstream exchange.", nil, func(s *cache.Stats) uint64 { return s.Coalesced }),
		counterOf("gatewayd_cache_stores_total", "Responses stored or refreshed.", nil, func(s *cache.Stats) uint64 { return s.Stored }),
		counterOf("gatewayd_cache_evictions_total", "Entries dropped to stay within max_bytes.", nil, func(s *cache.Stats) uint64 { return s.Evictions }),
		counterOf("gatewayd_cache_expirations_total", "Stale entries without an ETag dropped when found.", nil, func(s *cache.Stats) uint64 { return s.Expired }),
		counterOf("gatewayd_cache_superseded_blocks_total", "Cached blocks dropped because the origin sent a newer representation of their resource (RFC 7959 §2.10).", nil, func(s *cache.Stats) uint64 { return s.Superseded }),
		counterOf("gatewayd_cache_invalidations_total", "Entries dropped because an unsafe request to their URI succeeded.", nil, func(s *cache.Stats) uint64 { return s.Invalidated }),
	}
	observeStats = []stat[observe.Stats]{
		gaugeOf("gatewayd_observe_observers", "Observers registered now.", nil, func(s *observe.Stats) float64 { return float64(s.Observers) }),
		gaugeOf("gatewayd_observe_upstream_observations", "Upstream observations now, one per observed resource.", nil, func(s *observe.Stats) float64 { return float64(s.Upstreams) }),
		counterOf("gatewayd_observe_notifications_received_total", "Notifications received from upstream.", nil, func(s *observe.Stats) uint64 { return s.NotificationsIn }),
		counterOf("gatewayd_observe_notifications_sent_total", "Notifications sent to observers.", nil, func(s *observe.Stats) uint64 { return s.NotificationsOut }),
		counterOf("gatewayd_observe_stale_notifications_total", "Upstream notifications dropped as out of sequence (RFC 7641 §3.4).", nil, func(s *observe.Stats) uint64 { return s.DroppedStale }),
		counterOf("gatewayd_observe_skipped_notifications_total", "Notifications an observer never got because a newer one replaced it (RFC 7641 §4.5).", nil, func(s *observe.Stats) uint64 { return s.Skipped }),
		counterOf("gatewayd_observe_deregistrations_total", "Observers removed by Observe=1, RST, a confirmable timeout or ICMP.", nil, func(s *observe.Stats) uint64 { return s.Deregistrations }),
		counterOf("gatewayd_observe_rejected_notifications_total", "Observers removed because they answered a notification with RST (RFC 7641 §3.6).", nil, func(s *observe.Stats) uint64 { return s.Rejected }),
		counterOf("gatewayd_observe_unconfirmed_notifications_total", "Observers removed because a confirmable notification went unacknowledged (RFC 7641 §4.5).", nil, func(s *observe.Stats) uint64 { return s.Unconfirmed }),
		counterOf("gatewayd_observe_unreachable_observers_total", "Observers removed because the network reported their address and port unreachable (ICMP).", nil, func(s *observe.Stats) uint64 { return s.Unreachable }),
		counterOf("gatewayd_observe_refused_registrations_total", "Registrations answered without Observe because of max_observers or max_per_client.", nil, func(s *observe.Stats) uint64 { return s.OverLimit }),
		counterOf("gatewayd_observe_expired_protected_observations_total", "Protected observations ended after a day without a notification.", nil, func(s *observe.Stats) uint64 { return s.ProtectedExpired }),
	}
	pubsubStats = []stat[pubsub.Stats]{
		gaugeOf("gatewayd_pubsub_topics", "Broker topics now.", nil, func(s *pubsub.Stats) float64 { return float64(s.Topics) }),
		gaugeOf("gatewayd_pubsub_subscriptions", "Observations the broker is the origin of now.", nil, func(s *pubsub.Stats) float64 { return float64(s.Subscriptions) }),
		counterOf("gatewayd_pubsub_publications_total", "Publications accepted.", nil, func(s *pubsub.Stats) uint64 { return s.Publications }),
		counterOf("gatewayd_pubsub_notifications_total", "Notifications the broker handed to the Observe hub for its subscribers.", nil, func(s *pubsub.Stats) uint64 { return s.SubscribersInformed }),
		counterOf("gatewayd_pubsub_rejected_requests_total", "Requests the broker answered with 4.xx or 5.xx.", nil, func(s *pubsub.Stats) uint64 { return s.Rejected }),
		counterOf("gatewayd_pubsub_expired_topics_total", "Topics removed because their expiration date passed.", nil, func(s *pubsub.Stats) uint64 { return s.Expired }),
		counterOf("gatewayd_pubsub_bad_state_files_total", "State files skipped at start.", nil, func(s *pubsub.Stats) uint64 { return s.BadStateFiles }),
	}
	rdStats = []stat[rd.Stats]{
		gaugeOf("gatewayd_rd_registrations", "Resource directory registrations now.", nil, func(s *rd.Stats) float64 { return float64(s.Registrations) }),
		gaugeOf("gatewayd_rd_links", "Links of all resource directory registrations now.", nil, func(s *rd.Stats) float64 { return float64(s.Links) }),
		gaugeOf("gatewayd_rd_lookup_observations", "Observed lookups the resource directory is the origin of now.", nil, func(s *rd.Stats) float64 { return float64(s.Observations) }),
		counterOf("gatewayd_rd_registrations_created_total", "Registrations made, simple registrations included.", nil, func(s *rd.Stats) uint64 { return s.Registered }),
		counterOf("gatewayd_rd_registrations_refreshed_total", "Registrations renewed: updates and registrations of an endpoint already registered.", nil, func(s *rd.Stats) uint64 { return s.Refreshed }),
		counterOf("gatewayd_rd_registrations_removed_total", "Registrations deleted by their registrant.", nil, func(s *rd.Stats) uint64 { return s.Removed }),
		counterOf("gatewayd_rd_registrations_expired_total", "Registrations removed at the end of their lifetime.", nil, func(s *rd.Stats) uint64 { return s.Expired }),
		counterOf("gatewayd_rd_name_conflicts_total", "Registrations refused because another client holds the endpoint name.", nil, func(s *rd.Stats) uint64 { return s.NameConflicts }),
		counterOf("gatewayd_rd_client_limit_refusals_total", "Registrations refused because their client holds max_registrations_per_client.", nil, func(s *rd.Stats) uint64 { return s.ClientLimited }),
		counterOf("gatewayd_rd_simple_registration_failures_total", "Simple registrations whose GET of the registrant's /.well-known/core failed or gave no usable document.", nil, func(s *rd.Stats) uint64 { return s.SimpleFailures }),
		counterOf("gatewayd_rd_lookups_total", "Endpoint and resource lookups answered.", nil, func(s *rd.Stats) uint64 { return s.Lookups }),
		counterOf("gatewayd_rd_notifications_total", "Lookup notifications the resource directory handed to the Observe hub.", nil, func(s *rd.Stats) uint64 { return s.Notifications }),
		counterOf("gatewayd_rd_rejected_requests_total", "Requests the resource directory answered with 4.xx or 5.xx.", nil, func(s *rd.Stats) uint64 { return s.Rejected }),
		counterOf("gatewayd_rd_bad_state_files_total", "Resource directory state files skipped at start.", nil, func(s *rd.Stats) uint64 { return s.BadStateFiles }),
	}
	ampStats = []stat[AmpStats]{
		gaugeOf("gatewayd_amplification_verified_addresses", "Client addresses verified now by an Echo value they sent back or a confirmable message they acknowledged.", nil, func(s *AmpStats) float64 { return float64(s.Verified) }),
		counterOf("gatewayd_amplification_echo_challenges_total", "4.01 responses with an Echo option sent to unverified addresses (RFC 9175 §2.4).", nil, func(s *AmpStats) uint64 { return s.Challenges }),
		counterOf("gatewayd_amplification_observe_challenges_total", "Observe registrations from unverified addresses answered with the Echo challenge, not registered.", nil, func(s *AmpStats) uint64 { return s.ObserveChallenges }),
		counterOf("gatewayd_amplification_echo_verifications_total", "Addresses verified by sending back an Echo value made for them.", nil, func(s *AmpStats) uint64 { return s.EchoVerified }),
		counterOf("gatewayd_amplification_expired_echoes_total", "Echo values of this proxy's that came back after echo_lifetime.", nil, func(s *AmpStats) uint64 { return s.EchoExpired }),
		counterOf("gatewayd_amplification_ack_verifications_total", "Addresses verified by acknowledging a confirmable message the proxy sent them.", nil, func(s *AmpStats) uint64 { return s.AckVerified }),
		counterOf("gatewayd_amplification_block_responses_total", "Blocks of the gateway's own listings sent to unverified addresses, cut to fit three times the request.", nil, func(s *AmpStats) uint64 { return s.Blocks }),
		counterOf("gatewayd_amplification_trimmed_responses_total", "Answers to unverified addresses sent without payload (or options) to fit three times the request.", nil, func(s *AmpStats) uint64 { return s.Trimmed }),
		counterOf("gatewayd_amplification_dropped_responses_total", "Answers to unverified addresses not sent: a separate response whose retransmissions would exceed the limit, or a challenge too late to be piggybacked.", nil, func(s *AmpStats) uint64 { return s.Dropped }),
	}
	radioStats = []stat[radio.Counters]{
		gaugeOf("gatewayd_radio_up", "1 when the radio is up.", byRadio, func(s *radio.Counters) float64 { return up(s.Up) }),
		counterOf("gatewayd_radio_frames_sent_total", "MAC frames sent.", byRadio, func(s *radio.Counters) uint64 { return s.Conn.FramesTx }),
		counterOf("gatewayd_radio_frames_received_total", "MAC frames received.", byRadio, func(s *radio.Counters) uint64 { return s.Conn.FramesRx }),
		counterOf("gatewayd_radio_sent_bytes_total", "Octets sent on air (PSDU with FCS).", byRadio, func(s *radio.Counters) uint64 { return s.Conn.BytesTx }),
		counterOf("gatewayd_radio_received_bytes_total", "Octets received on air (PSDU with FCS).", byRadio, func(s *radio.Counters) uint64 { return s.Conn.BytesRx }),
		counterOf("gatewayd_radio_transmit_errors_total", "Frames the radio failed to send: no ack, busy channel, link lost.", byRadio, func(s *radio.Counters) uint64 { return s.Link.TxErrors }),
		counterOf("gatewayd_radio_decode_errors_total", "Frames, 6LoWPAN payloads or UDP packets that did not decode or verify.", byRadio, func(s *radio.Counters) uint64 { return s.Conn.DecodeErrors }),
		counterOf("gatewayd_radio_reassemblies_dropped_total", "6LoWPAN reassemblies dropped: timeout, cap, overlap or oversize.", byRadio, func(s *radio.Counters) uint64 { return s.Conn.ReassemblyDrops }),
		counterOf("gatewayd_radio_datagrams_dropped_total", "Received datagrams dropped because the receive queue was full.", byRadio, func(s *radio.Counters) uint64 { return s.Conn.QueueDrops }),
		counterOf("gatewayd_radio_reconnects_total", "Times the radio link came back after being lost.", byRadio, func(s *radio.Counters) uint64 { return s.Link.Reconnects }),
	}
	pluginStats = []stat[plugins.Stats]{
		gaugeOf("gatewayd_plugin_up", "1 when the plugin runs, 0 while it is down or cannot start.", byPlugin, func(s *plugins.Stats) float64 { return up(s.Up) }),
		counterOf("gatewayd_plugin_starts_total", "Successful starts of the plugin, the first included.", byPlugin, func(s *plugins.Stats) uint64 { return s.Starts }),
		counterOf("gatewayd_plugin_start_failures_total", "Start attempts that failed: file, digest, exec, handshake or init.", byPlugin, func(s *plugins.Stats) uint64 { return s.Failures }),
		counterOf("gatewayd_plugin_restarts_total", "Times the plugin died, or was stopped for a fault, while gatewayd ran.", byPlugin, func(s *plugins.Stats) uint64 { return s.Restarts }),
		counterOf("gatewayd_plugin_requests_total", "Requests and observations sent to the plugin.", byPlugin, func(s *plugins.Stats) uint64 { return s.Requests }),
		counterOf("gatewayd_plugin_unavailable_responses_total", "Requests answered 5.03 because the plugin was down.", byPlugin, func(s *plugins.Stats) uint64 { return s.Unavail }),
		counterOf("gatewayd_plugin_callbacks_total", "Requests the plugin's front end sent into the chain.", byPlugin, func(s *plugins.Stats) uint64 { return s.Callbacks }),
		counterOf("gatewayd_plugin_observations_total", "Observations the plugin's front end registered through the chain.", byPlugin, func(s *plugins.Stats) uint64 { return s.Observes }),
		counterOf("gatewayd_plugin_skipped_notifications_total", "Notifications of the plugin's observations replaced by a newer one before it read them.", byPlugin, func(s *plugins.Stats) uint64 { return s.ObserveSkipped }),
		counterOf("gatewayd_plugin_oversized_bodies_total", "Bodies of the plugin's callbacks over max_body, refused whole.", byPlugin, func(s *plugins.Stats) uint64 { return s.TooLarge }),
		counterOf("gatewayd_plugin_blockwise_transfers_total", "Host.Do calls and Host.Observe messages of the plugin that took more than one block-wise exchange.", byPlugin, func(s *plugins.Stats) uint64 { return s.Blockwise }),
		counterOf("gatewayd_plugin_log_lines_dropped_total", "Log lines of the plugin dropped over the rate limit.", byPlugin, func(s *plugins.Stats) uint64 { return s.LogDropped }),
	}
)

// descRadioDrop counts a radio's receive drops by radio.DropReason.
// descStreamHandshake counts by reason (stream.HandshakeReason): a TLS
// failure on wss:// is as much the operator's concern as one on tls://.
var descStreamHandshake = prometheus.NewDesc("gatewayd_stream_handshake_failures_total",
	"Connections that did not get past their handshake, by reason: tls (the TLS handshake of tls:// or wss:// failed or timed out), "+
		"path (an HTTP request for another path than the WebSocket endpoint's), upgrade (not a WebSocket upgrade, or a foreign origin), "+
		"subprotocol (an upgrade without the subprotocol coap), csm (no CSM in time).", []string{"listen", "reason"}, nil)

var descRadioDrop = prometheus.NewDesc("gatewayd_radio_drops_total", "Received radio frames and datagrams dropped, by reason.", []string{"radio", "reason"}, nil)

func describe[S any](ch chan<- *prometheus.Desc, stats []stat[S]) {
	for _, s := range stats {
		ch <- s.desc
	}
}

func emit[S any](ch chan<- prometheus.Metric, stats []stat[S], v *S, labels ...string) {
	for _, s := range stats {
		ch <- prometheus.MustNewConstMetric(s.desc, s.kind, s.get(v), labels...)
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, endpointStats)
	describe(ch, streamStats)
	ch <- descStreamHandshake
	describe(ch, originStats)
	describe(ch, cacheStats)
	describe(ch, observeStats)
	describe(ch, pubsubStats)
	describe(ch, rdStats)
	describe(ch, ampStats)
	describe(ch, radioStats)
	describe(ch, pluginStats)
	ch <- descRadioDrop
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for i, e := range c.p.servers {
		s := e.Stats()
		emit(ch, endpointStats, &s, c.p.labels[i])
	}
	for _, l := range c.p.streams {
		s := l.s.Stats()
		emit(ch, streamStats, &s, l.label)
		for r, v := range s.HandshakeFailures {
			ch <- prometheus.MustNewConstMetric(descStreamHandshake, prometheus.CounterValue, float64(v), l.label, stream.HandshakeReason(r).String())
		}
	}
	ss, ds := c.p.streamUp.pool.Stats(), c.p.dtlsUp.pool.Stats()
	emit(ch, originStats, &ss, "stream")
	emit(ch, originStats, &ds, "dtls")
	cs := c.p.cache.Stats()
	emit(ch, cacheStats, &cs)
	hs := c.p.hub.Stats()
	emit(ch, observeStats, &hs)
	if b := c.p.broker; b != nil {
		bs := b.Stats()
		emit(ch, pubsubStats, &bs)
	}
	if d := c.p.rd; d != nil {
		ds := d.Stats()
		emit(ch, rdStats, &ds)
	}
	as := c.p.amp.Stats()
	emit(ch, ampStats, &as)
	if h := c.p.plugins; h != nil {
		for _, ps := range h.Stats() {
			emit(ch, pluginStats, &ps, ps.Name)
		}
	}
	for _, r := range c.p.radios {
		rc := r.r.Counters()
		emit(ch, radioStats, &rc, r.r.Name())
		for reason, v := range rc.Conn.Drops {
			ch <- prometheus.MustNewConstMetric(descRadioDrop, prometheus.CounterValue, float64(v), r.r.Name(), reason)
		}
	}
}

// ServeAdmin starts the admin endpoint (/metrics, /status, and with
// [metrics] pprof /debug/pprof/) on addr; Close stops it. It returns the
// bound address.
func (p *Proxy) ServeAdmin(ctx context.Context, addr string) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("bridge: metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	if p.cfg.Metrics.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Status())
	})
	h, err := p.adminHandler(mux)
	if err != nil {
		l.Close()
		return "", err
	}
	p.admin = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
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
