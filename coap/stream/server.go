package stream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/opaque-edge/gatewayd/coap"
)

// Config configures connections, in either role. Zero fields get their
// defaults.
type Config struct {
	// Handler serves the requests peers send; nil answers them 5.01
	// (§3.3).
	Handler coap.Handler
	// Inline, when set, picks the requests served on the connection's
	// reader goroutine instead of one of their own: those whose way
	// through Handler never blocks, since it answers at once or through
	// coap.Later (coap.Inline reports true for them), as the endpoint's
	// EndpointConfig.Inline does. This spares each such request a
	// goroutine that waits for its answer. Inline itself runs on the
	// reader and must be quick.
	Inline func(r *coap.Request) bool
	// MaxMessageSize is the largest message taken from a peer, and the
	// Max-Message-Size of our CSM (§5.3.1). With Block-Wise-Transfer,
	// which the CSM always carries, a value over 1152 also tells the
	// peer that BERT may be used (§5.3.2, §6). Default 1152. A larger
	// request is skipped and answered 4.13 with Size1; anything else
	// larger aborts the connection.
	MaxMessageSize int
	// Keepalive, when not 0, is how long a peer may be quiet before it
	// gets a Ping; one that then stays quiet for as long again is closed
	// (§5.4). 0 turns it off: an idle connection is never closed.
	Keepalive time.Duration
	// MaxBuffered bounds the bytes waiting to be written to one
	// connection while its socket is full; past it the connection is
	// closed (its peer does not read). Default 256 KiB.
	MaxBuffered int
	// MaxInflight bounds one connection's requests being handled at
	// once; past it the reader waits, and TCP holds the peer back.
	// Default 64.
	MaxInflight int
	// MaxConns bounds a server's connections; past it new ones are closed
	// at once. Default 1024.
	MaxConns int
	// MaxHandshakes bounds a server's connections that have not finished
	// their TLS or WebSocket handshake and sent their CSM; past it new
	// ones are closed at once. Default 64.
	MaxHandshakes int
	// HandshakeTimeout bounds the TLS or WebSocket handshake and the wait
	// for the peer's first CSM (§3.3: a missing CSM aborts). Default 10s.
	HandshakeTimeout time.Duration
	// Accept, when set, refuses connections from some addresses before
	// any handshake.
	Accept func(netip.AddrPort) bool
	// WSOrigins are the origins (host patterns, path.Match syntax) whose
	// web pages may open WebSocket connections besides pages of the
	// server's own host; others are refused, so that a page from
	// anywhere cannot use a browser on the network as a client.
	WSOrigins []string
	Logger    *slog.Logger

	// rest is how long after it first serves a request inline a plain
	// TCP reader hands its wait to a fresh goroutine (Conn.readLoop);
	// default restAfter, shorter in tests.
	rest time.Duration
}

// restAfter is how long a TCP reader that runs the chain keeps the stack
// it grew there before waiting on a fresh one: a busy connection starts a
// goroutine once a second, an idle one gives the grown stack back.
const restAfter = time.Second

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = BaseMaxMessageSize
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 256 << 10
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 64
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 1024
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 64
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.rest <= 0 {
		c.rest = restAfter
	}
	return c
}

// Stats are a server's or a client's counters.
type Stats struct {
	Conns           int    // connections open now
	Accepted        uint64 // connections accepted (or dialled)
	Refused         uint64 // connections refused by Accept
	OverLimit       uint64 // connections closed at once: MaxConns or MaxHandshakes reached
	HandshakeFailed uint64 // TLS or WebSocket handshakes that failed or timed out, and connections without a CSM in time
	Received        uint64 // frames read
	Sent            uint64 // frames written
	Requests        uint64 // requests handed to the handler
	Inline          uint64 // of them, served on the connection's reader (Config.Inline)
	Notifications   uint64 // notifications sent
	Malformed       uint64 // frames that failed to decode (the connection is aborted), reserved codes
	Oversize        uint64 // frames over MaxMessageSize
	TooBig          uint64 // messages not sent: over the peer's Max-Message-Size
	Unmatched       uint64 // responses matching none of our requests
	Pings           uint64 // Pings answered
	Releases        uint64 // Release messages received
	AbortsSent      uint64
	AbortsReceived  uint64
	Overflow        uint64 // connections closed because MaxBuffered bytes waited
	KeepalivePings  uint64 // Pings sent to quiet peers
	KeepaliveClosed uint64 // connections closed: a quiet peer did not answer the Ping

	// HandshakeFailures splits HandshakeFailed by HandshakeReason.
	HandshakeFailures [NumHandshakeReasons]uint64
}

// HandshakeReason is why a connection did not get past its handshake.
type HandshakeReason int

const (
	HandshakeTLS         HandshakeReason = iota // tls, wss: the TLS handshake failed or timed out
	HandshakePath                               // ws, wss: an HTTP request for another path than the endpoint's (RFC 8323 §8.3, §8.4)
	HandshakeUpgrade                            // ws, wss: not a WebSocket upgrade the server takes (plain HTTP, a foreign origin)
	HandshakeSubprotocol                        // ws, wss: an upgrade without the subprotocol "coap" (RFC 8323 §4.1)
	HandshakeCSM                                // no CSM from the peer in time (RFC 8323 §5.3.1)
	NumHandshakeReasons
)

// String is the reason's label value: tls, path, upgrade, subprotocol,
// csm.
func (r HandshakeReason) String() string {
	if r < 0 || r >= NumHandshakeReasons {
		return "unknown"
	}
	return [...]string{"tls", "path", "upgrade", "subprotocol", "csm"}[r]
}

type counters struct {
	conns                                                                   atomic.Int64
	accepted, refused, overLimit, handshakeFailed, received, sent, requests atomic.Uint64
	notifications, malformed, oversize, tooBig, unmatched, pings, releases  atomic.Uint64
	inline                                                                  atomic.Uint64
	abortsSent, abortsReceived, overflow, keepalivePings, keepaliveClosed   atomic.Uint64

	handshakeFailures [NumHandshakeReasons]atomic.Uint64 // by HandshakeReason
}

func (c *counters) stats() Stats {
	return Stats{
		Conns: int(c.conns.Load()), Accepted: c.accepted.Load(), Refused: c.refused.Load(), OverLimit: c.overLimit.Load(),
		HandshakeFailed: c.handshakeFailed.Load(), Received: c.received.Load(), Sent: c.sent.Load(),
		Requests: c.requests.Load(), Inline: c.inline.Load(), Notifications: c.notifications.Load(), Malformed: c.malformed.Load(),
		Oversize: c.oversize.Load(), TooBig: c.tooBig.Load(), Unmatched: c.unmatched.Load(), Pings: c.pings.Load(),
		Releases: c.releases.Load(), AbortsSent: c.abortsSent.Load(), AbortsReceived: c.abortsReceived.Load(),
		Overflow: c.overflow.Load(), KeepalivePings: c.keepalivePings.Load(), KeepaliveClosed: c.keepaliveClosed.Load(),
		HandshakeFailures: c.failures(),
	}
}

func (c *counters) failures() (out [NumHandshakeReasons]uint64) {
	for i := range out {
		out[i] = c.handshakeFailures[i].Load()
	}
	return out
}

// failHandshake counts a connection that did not get past its handshake.
func (c *counters) failHandshake(r HandshakeReason) {
	c.handshakeFailures[r].Add(1)
	c.handshakeFailed.Add(1)
}

// Server accepts CoAP connections on listeners (TCP, TLS, WebSockets) and
// serves their requests. Close stops everything it started.
type Server struct {
	cfg        Config
	st         counters
	ctx        context.Context // handlers run under it; ended by Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup // accept loops, connections, handlers, writers
	handshakes chan struct{}

	mu        sync.Mutex
	conns     map[*Conn]struct{} // guarded by mu
	listeners []net.Listener     // guarded by mu
	https     []*http.Server     // guarded by mu
	closed    bool               // guarded by mu
}

// NewServer returns a server with no listener yet.
func NewServer(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, conns: map[*Conn]struct{}{}, handshakes: make(chan struct{}, cfg.MaxHandshakes)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Stats returns the counters.
func (s *Server) Stats() Stats { return s.st.stats() }

// Serve accepts connections on l, CoAP over TCP (§3), or over TLS when
// tc is not nil, until Close. It returns at once; the accept loop is the
// server's.
func (s *Server) Serve(l net.Listener, tc *tls.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.listeners = append(s.listeners, l)
	s.wg.Add(1)
	go s.acceptLoop(l, tc)
	return nil
}

// ServeWS serves CoAP over WebSockets (§4) on l at path, over TLS when tc
// is not nil (wss). It returns at once.
func (s *Server) ServeWS(l net.Listener, path string, tc *tls.Config) error {
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				s.st.failHandshake(HandshakePath)
				http.NotFound(w, r)
				return
			}
			s.upgrade(w, r, tc != nil)
		}),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		MaxHeaderBytes:    8 << 10,
		// Handshake failures are a peer's doing: counted, and logged at
		// debug level only, never on the process's stderr.
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		// The upgrade keeps the connection, to bound its closing
		// handshake (wsTransport.close).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, rawConnKey{}, c)
		},
		// The HTTP server runs the TLS handshake of wss itself and only
		// logs a failure; a connection that ends without a completed
		// one is the failure to count. After an upgrade the connection
		// is hijacked and never reported closed here.
		ConnState: func(c net.Conn, st http.ConnState) {
			if tlc, ok := c.(*tls.Conn); ok && st == http.StateClosed && !tlc.ConnectionState().HandshakeComplete && s.ctx.Err() == nil {
				s.st.failHandshake(HandshakeTLS)
			}
		},
	}
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.https = append(s.https, hs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		hs.Serve(&limitListener{Listener: l, s: s})
	}()
	return nil
}

// rawConnKey holds an HTTP request's connection in its context.
type rawConnKey struct{}

// limitListener refuses connections Accept does not want before the HTTP
// server spends anything on them.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.accept(c) {
			return c, nil
		}
		c.Close()
	}
}

// accept applies Accept.
func (s *Server) accept(c net.Conn) bool {
	if s.cfg.Accept == nil {
		return true
	}
	ap, ok := addrPort(c.RemoteAddr())
	if ok && s.cfg.Accept(ap) {
		return true
	}
	s.st.refused.Add(1)
	return false
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

func (s *Server) acceptLoop(l net.Listener, tc *tls.Config) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if !s.accept(nc) {
			nc.Close()
			continue
		}
		if tcp, ok := nc.(*net.TCPConn); ok {
			tcp.SetNoDelay(true)
		}
		s.wg.Add(1)
		go s.handshake(nc, tc)
	}
}

// handshake runs the TLS handshake, when there is one, and starts the
// connection.
func (s *Server) handshake(nc net.Conn, tc *tls.Config) {
	defer s.wg.Done()
	peer, _ := addrPort(nc.RemoteAddr())
	if !s.takeHandshake() {
		nc.Close()
		return
	}
	identity := ""
	var t transport
	if tc != nil {
		tlc := tls.Server(nc, tc)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
		err := tlc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.st.failHandshake(HandshakeTLS)
			s.cfg.Logger.Debug("TLS handshake failed", "peer", peer, "err", err)
			<-s.handshakes
			nc.Close()
			return
		}
		identity = tlsIdentity(tlc.ConnectionState())
		t = newStreamTransport(tlc)
	} else {
		t = newStreamTransport(nc)
	}
	s.run(t, peer, tc != nil, identity)
}

// takeHandshake takes one of MaxHandshakes, or counts the refusal.
func (s *Server) takeHandshake() bool {
	select {
	case s.handshakes <- struct{}{}:
		return true
	default:
		s.st.overLimit.Add(1)
		return false
	}
}

// tlsIdentity is "cn:" and the subject common name of a verified client
// certificate, as the DTLS listener names its clients.
func tlsIdentity(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return identityOf(cs.VerifiedChains[0][0])
}

func identityOf(c *x509.Certificate) string {
	if c.Subject.CommonName == "" {
		return ""
	}
	return "cn:" + c.Subject.CommonName
}

// run serves one connection whose handshake slot it holds: it registers
// it, sends our CSM, and frees the slot once the peer's CSM came.
//
// run returns once the connection has its CSM or is refused; what is
// left to do when it ends, its reader does (onEnd), so that an idle
// connection holds one goroutine. The returned done is closed when it
// has ended.
func (s *Server) run(t transport, peer netip.AddrPort, secure bool, identity string) (done <-chan struct{}) {
	c := newConn(t, &s.cfg, &s.st, peer, secure, identity, s.ctx, &s.wg)
	s.mu.Lock()
	if s.closed || len(s.conns) >= s.cfg.MaxConns {
		closed := s.closed
		s.mu.Unlock()
		<-s.handshakes
		if !closed {
			s.st.overLimit.Add(1)
		}
		t.close()
		// No reader starts to close it: a WebSocket's handler waits on
		// it, and Close on the handler.
		close(c.done)
		return c.done
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.st.accepted.Add(1)
	s.st.conns.Add(1)
	s.wg.Add(1) // Done by onEnd: Close waits for the reader
	c.onEnd = func() {
		c.closeWith(ErrClosed)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.st.conns.Add(-1)
		s.wg.Done()
	}
	c.start()
	timer := time.NewTimer(s.cfg.HandshakeTimeout)
	select {
	case <-c.csm:
	case <-timer.C:
		s.st.failHandshake(HandshakeCSM)
		c.abort("no CSM", 0)
	}
	timer.Stop()
	<-s.handshakes
	return c.done
}

// upgrade accepts a WebSocket connection (§4.1: subprotocol "coap").
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, secure bool) {
	peer, _ := netip.ParseAddrPort(r.RemoteAddr)
	if !s.takeHandshake() {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"coap"}, OriginPatterns: s.wsOrigins()})
	if err != nil {
		<-s.handshakes
		s.st.failHandshake(HandshakeUpgrade)
		s.cfg.Logger.Debug("WebSocket upgrade refused", "peer", peer, "err", err)
		return
	}
	if wc.Subprotocol() != "coap" {
		<-s.handshakes
		s.st.failHandshake(HandshakeSubprotocol)
		wc.Close(websocket.StatusProtocolError, `subprotocol "coap" required (RFC 8323 §4.1)`)
		return
	}
	wc.SetReadLimit(int64(s.cfg.MaxMessageSize))
	identity := ""
	if r.TLS != nil {
		identity = tlsIdentity(*r.TLS)
	}
	// The HTTP server's handler goroutine is the connection's: it
	// returns when the connection ends.
	s.wg.Add(1)
	defer s.wg.Done()
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	t := newWSTransport(wc, raw)
	<-s.run(t, peer, secure, identity)
	t.wait()
}

// wsOrigins are the origins allowed besides the page's own host.
func (s *Server) wsOrigins() []string { return s.cfg.WSOrigins }

// Close stops the listeners, closes every connection and waits for all
// the server started. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls, hs := s.listeners, s.https
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	for _, l := range ls {
		l.Close()
	}
	for _, h := range hs {
		h.Close()
	}
	for _, c := range conns {
		c.closeWith(ErrClosed)
	}
	s.wg.Wait()
	return nil
}
