package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock"
)

// dtlsOrigins reaches coaps:// origins: one DTLS session per origin,
// pooled, under gatewayd's own message layer (a coap.Endpoint on the
// session: CON, retransmission and deduplication are the same as over
// UDP; pion only secures the datagrams). Sessions are resumed when an
// origin allows it (RFC 5246 §7.3 abbreviated handshake), so a redial
// after the origin closed one costs one round trip less.
type dtlsOrigins struct {
	pool     *pool
	log      *slog.Logger
	sessions sessionStore
}

// newDTLSOrigins returns the origins' pool, whose sessions close after
// idle without an exchange or an observation (0: never).
func newDTLSOrigins(log *slog.Logger, idle time.Duration, clk clock.Clock) *dtlsOrigins {
	return &dtlsOrigins{pool: newPool(idle, clk), log: log, sessions: sessionStore{m: map[string]dtls.Session{}}}
}

func (d *dtlsOrigins) Close() error { return d.pool.Close() }

// dtlsSession is a pooled DTLS session and the endpoint on it.
type dtlsSession struct {
	c    *dtls.Conn
	peer netip.AddrPort
	e    *coap.Endpoint
	ctx  context.Context // ends with the session
	end  context.CancelFunc
}

var _ coap.Transport = (*dtlsSession)(nil)

func (s *dtlsSession) gone() <-chan struct{} { return s.ctx.Done() }

// ReadFrom reads the next record's datagram. A failed read ends the
// session (the origin closed it, or sent an alert): the endpoint stops,
// and the pool dials anew at the next request.
func (s *dtlsSession) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, err := s.c.Read(b)
	if err != nil {
		s.end()
		return 0, s.peer, fmt.Errorf("%w: %w", coap.ErrClosed, err)
	}
	return n, s.peer, nil
}

func (s *dtlsSession) WriteTo(_ context.Context, b []byte, _ netip.AddrPort) error {
	_, err := s.c.Write(b)
	return err
}

// Close is the endpoint's: it closes the session under it.
func (s *dtlsSession) Close() error {
	s.end()
	return s.c.Close()
}

// pooledDTLS is what the pool holds: closing it closes the endpoint,
// which closes the session.
type pooledDTLS struct{ *dtlsSession }

func (p pooledDTLS) Close() error { return p.e.Close() }

// config is the DTLS client configuration for an origin.
func (d *dtlsOrigins) config(c *originCreds) *dtls.Config {
	cfg := &dtls.Config{
		CipherSuites: dtlsSuites,
		ServerName:   c.serverName,
		RootCAs:      c.roots,
		SessionStore: &d.sessions,
	}
	if c.psk != nil {
		key := c.psk
		cfg.PSK = func([]byte) ([]byte, error) { return key, nil }
		cfg.PSKIdentityHint = []byte(c.pskIdentity)
	}
	if c.cert != nil {
		cfg.Certificates = []tls.Certificate{*c.cert}
	}
	if c.psk != nil && c.cert == nil && c.roots == nil {
		// PSK alone: the key authenticates the origin (RFC 7252
		// §9.1.3.1); no certificate is expected.
		cfg.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256}
	}
	return cfg
}

// session returns the session with an origin, and the release of the
// caller's lease on it (pool.get).
func (d *dtlsOrigins) session(ctx context.Context, k originKey, cr *originCreds) (*dtlsSession, func(), error) {
	c, release, err := d.pool.get(ctx, k, func(ctx context.Context) (pooledConn, error) {
		uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(k.addr))
		if err != nil {
			return nil, err
		}
		dc, err := dtls.Client(dtlsnet.PacketConnFromConn(uc), uc.RemoteAddr(), d.config(cr))
		if err != nil {
			uc.Close()
			return nil, err
		}
		// A wrong key shows as silence, not an alert: the origin drops
		// our Finished, which does not decrypt (RFC 6347 §4.1.2.7), and
		// pion retransmits. A short bound makes that a prompt 5.02
		// within the proxy's timeout rather than a 5.04.
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := dc.HandshakeContext(hctx); err != nil {
			dc.Close()
			if hctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("no answer in %v (wrong key?): %w", handshakeTimeout, err)
			}
			return nil, fmt.Errorf("DTLS handshake: %w", err)
		}
		s := &dtlsSession{c: dc, peer: k.addr}
		s.ctx, s.end = context.WithCancel(context.Background())
		s.e = coap.NewEndpoint(s, coap.EndpointConfig{Logger: d.log})
		return pooledDTLS{s}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return c.(pooledDTLS).dtlsSession, release, nil
}

// dtlsUpstream sends one request over its origin's session.
type dtlsUpstream struct {
	o  *dtlsOrigins
	k  originKey
	cr *originCreds
}

var _ Upstream = (*dtlsUpstream)(nil)

func (u *dtlsUpstream) RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	s, release, err := u.o.session(ctx, u.k, u.cr)
	if err != nil {
		return nil, err
	}
	defer release()
	resp, err := s.e.Do(ctx, target, req)
	if errors.Is(err, coap.ErrClosed) {
		return nil, connError(u.k, err)
	}
	return resp, err
}

func (u *dtlsUpstream) Observe(ctx context.Context, target netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	s, release, err := u.o.session(ctx, u.k, u.cr)
	if err != nil {
		return nil, nil, err
	}
	var ended atomic.Bool
	resp, obs, err := s.e.Observe(ctx, target, req, func(m *coap.Message) {
		if !ended.Load() {
			notify(m)
		}
	})
	if err != nil || obs == nil {
		release()
		return resp, nil, err
	}
	// The observation holds the session open until it is cancelled, or
	// until the session ends (the origin closed it, sent an alert, or the
	// pool closed): then the hub hears it at once, by a final 5.02, as it
	// does from a stream origin, rather than waiting for notifications
	// that cannot come; its observers may register afresh, over a new
	// session.
	stopAfter := context.AfterFunc(s.ctx, func() {
		release()
		if ended.CompareAndSwap(false, true) {
			notify(&coap.Message{Code: coap.BadGateway, Payload: []byte("coaps session with the origin closed")})
		}
	})
	stop := stopper(req, obs)
	return resp, func(ctx context.Context) error {
		stopAfter()
		defer release()
		if !ended.CompareAndSwap(false, true) {
			return nil
		}
		return stop(ctx)
	}, nil
}

// sessionStore keeps the origins' DTLS sessions for resumption, at most
// maxOriginConns of them.
type sessionStore struct {
	mu sync.Mutex
	m  map[string]dtls.Session // guarded by mu
}

func (s *sessionStore) Set(key []byte, v dtls.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[string(key)]; !ok && len(s.m) >= maxOriginConns {
		for k := range s.m {
			delete(s.m, k) // any one: a session is only an optimisation
			break
		}
	}
	s.m[string(key)] = v
	return nil
}

func (s *sessionStore) Get(key []byte) (dtls.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[string(key)], nil
}

func (s *sessionStore) Del(key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, string(key))
	return nil
}
