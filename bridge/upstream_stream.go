package bridge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/clock"
)

// streamOrigins reaches origins over coap+tcp, coaps+tcp, coap+ws and
// coaps+ws (RFC 8323): one connection per origin, pooled and shared by
// every exchange and observation, with the CSM exchange of §5.3 and
// package stream's bounds.
type streamOrigins struct {
	cl   *stream.Client
	pool *pool
}

// newStreamOrigins returns the origins' pool, whose connections close
// after idle without an exchange or an observation (0: never).
func newStreamOrigins(cfg stream.Config, idle time.Duration, clk clock.Clock) *streamOrigins {
	return &streamOrigins{cl: stream.NewClient(cfg), pool: newPool(idle, clk)}
}

// Close closes every origin connection and waits for them.
func (s *streamOrigins) Close() error {
	s.pool.Close()
	return s.cl.Close()
}

// streamConn is a pooled connection.
type streamConn struct{ *stream.Conn }

func (c streamConn) gone() <-chan struct{} { return c.Done() }

// upstream is the Upstream for one request's origin.
func (s *streamOrigins) upstream(u *coap.URI, dst netip.AddrPort, cr *originCreds) *streamUpstream {
	return &streamUpstream{o: s, k: originKey{scheme: u.Scheme, host: u.Host, addr: dst}, u: u, cr: cr}
}

// conn returns the connection to k's origin, dialling it when needed,
// and the release of the caller's lease on it (pool.get). The address
// dialled is the one the allow list judged: the name is used for TLS and
// the WebSocket Host only.
func (s *streamOrigins) conn(ctx context.Context, k originKey, u *coap.URI, cr *originCreds) (*stream.Conn, func(), error) {
	c, release, err := s.pool.get(ctx, k, func(ctx context.Context) (pooledConn, error) {
		var c *stream.Conn
		var err error
		switch k.scheme {
		case "coap+tcp":
			c, err = s.cl.Dial(ctx, k.addr.String(), nil)
		case "coaps+tcp":
			c, err = s.cl.Dial(ctx, k.addr.String(), cr.tlsConfig(false))
		case "coap+ws", "coaps+ws":
			c, err = s.dialWS(ctx, k, u, cr)
		}
		if err != nil {
			return nil, err
		}
		return streamConn{c}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return c.(streamConn).Conn, release, nil
}

// dialWS opens the origin's WebSocket endpoint, /.well-known/coap (RFC
// 8323 §4.4, §8.3: the resource's path travels in Uri-Path options).
func (s *streamOrigins) dialWS(ctx context.Context, k originKey, u *coap.URI, cr *originCreds) (*stream.Conn, error) {
	scheme := "ws"
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", k.addr.String())
		},
		ForceAttemptHTTP2: false,
	}
	if k.scheme == "coaps+ws" {
		scheme = "wss"
		tr.TLSClientConfig = cr.tlsConfig(true)
	}
	host := u.Host
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	url := scheme + "://" + host + ":" + strconv.Itoa(int(u.Port)) + wsPath
	c, err := s.cl.DialWS(ctx, url, &http.Client{Transport: tr})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	return c, nil
}

// streamUpstream sends one request to its origin's pooled connection.
type streamUpstream struct {
	o  *streamOrigins
	k  originKey
	u  *coap.URI
	cr *originCreds
}

var _ Upstream = (*streamUpstream)(nil)

// connError is the client's answer to a connection that failed under an
// exchange: the origin's failure (5.02), told at once.
func connError(k originKey, err error) error {
	var ce *coap.Error
	if errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	return &coap.Error{Code: coap.BadGateway, Diagnostic: diagnostic(k.scheme + "://" + k.addr.String() + ": " + err.Error()), MaxAge: -1, Err: err}
}

func (u *streamUpstream) RoundTrip(ctx context.Context, _ netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	c, release, err := u.o.conn(ctx, u.k, u.u, u.cr)
	if err != nil {
		return nil, err
	}
	defer release()
	resp, err := c.Do(ctx, streamMsg(req))
	if err != nil {
		return nil, connError(u.k, err)
	}
	return resp, nil
}

// streamMsg is req without what a stream has not: type and message ID
// (RFC 8323 §3.2).
func streamMsg(req *coap.Message) *coap.Message {
	m := *req
	m.Type, m.MID = 0, 0
	return &m
}

func (u *streamUpstream) Observe(ctx context.Context, _ netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	c, release, err := u.o.conn(ctx, u.k, u.u, u.cr)
	if err != nil {
		return nil, nil, err
	}
	var ended atomic.Bool
	resp, cancel, err := c.Observe(ctx, streamMsg(req), func(m *coap.Message) {
		if !ended.Load() {
			notify(m)
		}
	})
	if err != nil {
		release()
		return nil, nil, connError(u.k, err)
	}
	if cancel == nil {
		release()
		return resp, nil, nil
	}
	// RFC 8323 §7.4 (and §5.5, §5.6): the observation ends with its
	// connection. The hub hears it at once, by a final notification, and
	// its observers may register afresh, over a new connection.
	// An active observation holds its connection open: the lease is
	// released when it is cancelled or its connection ends.
	stopAfter := context.AfterFunc(c.Context(), func() {
		release()
		if ended.CompareAndSwap(false, true) {
			notify(&coap.Message{Code: coap.BadGateway, Payload: []byte(u.k.scheme + " connection to the origin closed")})
		}
	})
	stop := func(ctx context.Context) error {
		stopAfter()
		defer release()
		if !ended.CompareAndSwap(false, true) {
			return nil
		}
		return cancel(ctx)
	}
	return resp, stop, nil
}

// defaultCreds are those of a coaps, coaps+tcp or coaps+ws origin
// without an [[origin]]: no key of gatewayd's own, the origin's
// certificate checked against the host's roots for its name.
func defaultCreds(u *coap.URI) *originCreds { return &originCreds{serverName: u.Host} }
