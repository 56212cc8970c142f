package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Errors of a connection that callers branch on.
var (
	ErrClosed   = errors.New("stream: connection closed")
	ErrAborted  = errors.New("stream: connection aborted by peer") // the peer sent Abort (§5.6)
	ErrOverflow = errors.New("stream: send buffer full")
	ErrNoCSM    = errors.New("stream: no CSM from peer")
	ErrTooBig   = errors.New("stream: message over the peer's Max-Message-Size")
)

// connIDs numbers connections for coap.Request.Conn across the process.
var connIDs atomic.Uint64

// Conn is one CoAP connection over a reliable transport, in either role:
// it serves the requests its peer sends (Config.Handler) and sends
// requests of its own (Do, Observe). Tokens are scoped to it (§3.3).
type Conn struct {
	t         transport
	cfg       *Config
	st        *counters
	id        uint64
	peer      netip.AddrPort
	secure    bool
	identity  string
	log       *slog.Logger
	handlerCx context.Context // what handlers run under: the server's
	runner    *coap.Runner    // the reader's, for Config.Inline: made at its first such request
	dec       coap.Message    // the reader's: the frame being served, decoded
	deep      bool            // the reader's: it has served a request inline (inRead)

	ctx    context.Context // ended when the connection closes
	cancel context.CancelFunc

	peerMax   atomic.Int64 // the peer's Max-Message-Size (§5.3.1)
	peerBlock atomic.Bool  // the peer indicated Block-Wise-Transfer (§5.3.2)
	csm       chan struct{}
	csmOnce   sync.Once
	lastRead  atomic.Int64 // unix nanoseconds of the last frame read, kept with Keepalive only
	slots     chan struct{}
	wg        *sync.WaitGroup // the owner's: handler and flush goroutines

	mu       sync.Mutex
	queue    []out            // guarded by mu: frames waiting to be written
	queued   int              // guarded by mu: their bytes
	writing  bool             // guarded by mu: someone is writing the queue
	closed   bool             // guarded by mu
	closeErr error            // guarded by mu
	calls    map[uint64]*call // guarded by mu: our requests and observations by token
	pings    map[uint64]chan struct{}
	nextTok  uint64         // guarded by mu
	inflight int            // guarded by mu: the peer's requests being handled
	custody  []*custodyPing // guarded by mu
	release  bool           // guarded by mu: the peer asked for a release (§5.5)
	keep     *time.Timer    // guarded by mu: keepalive
	pinged   bool           // guarded by mu: a keepalive Ping is unanswered
	done     chan struct{}  // closed once the reader has returned
	onEnd    func()         // set before start: run by the reader after done is closed
}

// call is one of our requests awaiting its response, or an observation.
type call struct {
	ch     chan *coap.Message // the first response
	notify func(*coap.Message)
	got    bool
}

func newConn(t transport, cfg *Config, st *counters, peer netip.AddrPort, secure bool, identity string, handlerCtx context.Context, wg *sync.WaitGroup) *Conn {
	c := &Conn{
		t: t, cfg: cfg, st: st, id: connIDs.Add(1), peer: peer, secure: secure, identity: identity,
		log: cfg.Logger, handlerCx: handlerCtx, csm: make(chan struct{}), wg: wg,
		slots: make(chan struct{}, cfg.MaxInflight), done: make(chan struct{}),
		nextTok: rand.Uint64(),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.peerMax.Store(BaseMaxMessageSize)
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// Peer is the address at the other end.
func (c *Conn) Peer() netip.AddrPort { return c.peer }

// Context ends when the connection closes.
func (c *Conn) Context() context.Context { return c.ctx }

// Done is closed once the connection is closed and its reader returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection closed, nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// PeerMaxMessageSize is the largest message the peer said it takes.
func (c *Conn) PeerMaxMessageSize() int { return int(c.peerMax.Load()) }

// start sends our CSM, which must be the first message (§3.3), and runs
// the reader; the caller's wg counts it.
func (c *Conn) start() {
	csm := &coap.Message{Code: CSM}
	csm.Options = csm.Options.SetUint(MaxMessageSize, uint32(c.cfg.MaxMessageSize))
	csm.Options = csm.Options.Insert(BlockWiseTransfer, nil)
	c.sendMsg(csm, nil, false)
	c.mu.Lock()
	if c.cfg.Keepalive > 0 {
		c.keep = time.AfterFunc(c.cfg.Keepalive, c.keepalive)
	}
	c.mu.Unlock()
	go c.readLoop()
}

// closeWith closes the connection once, for err.
func (c *Conn) closeWith(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeErr = true, err
	calls := c.calls
	c.calls = nil
	pings := c.pings
	c.pings = nil
	q := c.queue
	c.queue, c.queued = nil, 0
	if c.keep != nil {
		c.keep.Stop()
	}
	c.mu.Unlock()
	c.cancel()
	c.t.close()
	for _, cl := range calls {
		if !cl.got {
			close(cl.ch)
		}
	}
	for _, p := range pings {
		close(p)
	}
	for _, o := range q {
		settle(o, ErrClosed)
	}
	c.csmOnce.Do(func() { close(c.csm) })
}

// Close closes the connection at once.
func (c *Conn) Close() error {
	c.closeWith(ErrClosed)
	<-c.done
	return nil
}

// abort sends Abort with a diagnostic (§5.6) and closes.
func (c *Conn) abort(diag string, badOption coap.OptionID) {
	m := &coap.Message{Code: Abort, Payload: []byte(diag)}
	if badOption != 0 {
		m.Options = m.Options.SetUint(BadCSMOption, uint32(badOption))
	}
	c.st.abortsSent.Add(1)
	c.log.Debug("abort", "peer", c.peer, "reason", diag)
	if b, err := AppendFrame(nil, m, c.t.ws()); err == nil && c.takeWriter(abortGrace) {
		// Straight to the transport, after the frame being written (our
		// CSM, a response) so that it is not cut; a writer stuck on a
		// peer that does not read costs the Abort, not the close.
		c.t.write([]out{{b: b}})
	}
	c.closeWith(fmt.Errorf("stream: aborted: %s", diag))
}

// abortGrace bounds how long an Abort waits for a write under way.
const abortGrace = time.Second

// takeWriter makes the caller the connection's only writer, waiting up to
// grace for a flush under way to end; false if it did not. The connection
// closes next, so the writer is never given back.
func (c *Conn) takeWriter(grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	for {
		c.mu.Lock()
		if !c.writing && !c.closed {
			c.writing = true
			c.mu.Unlock()
			return true
		}
		closed := c.closed
		c.mu.Unlock()
		if closed || time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *Conn) readLoop() {
	if st, ok := c.t.(*streamTransport); ok && st.raw != nil {
		// Plain TCP: the frames are served within the read of the
		// descriptor.
		if st.serveFrames(c.cfg.MaxMessageSize, c) {
			// The reader rests: it goes on as a fresh goroutine, with
			// Go's smallest stack, and this one's grown stack is freed.
			// Go shrinks a waiting goroutine's stack only by halves and
			// only while three quarters of it are unused, which a reader
			// waiting in a read never leaves of the smallest sizes.
			c.deep = false
			go c.readLoop()
			return
		}
	} else {
		for c.serveFrame(c.t.readFrame(c.cfg.MaxMessageSize)) {
		}
	}
	close(c.done)
	if c.onEnd != nil {
		c.onEnd()
	}
}

// inRead reports whether a frame read over plain TCP is served within the
// read of the socket (streamTransport.serveFrames), on top of the read's
// calls: a response or an empty message, and anything once the reader has
// served a request inline, whose way through the handler grew its stack
// anyway. Until then requests and signals are served after the read
// returns, so that the reader of a connection that never forwards keeps
// the smallest stack: Go shrinks a stack only while a quarter of it is
// unused, which a reader waiting in a read never leaves of the smallest
// sizes, and each idle connection would keep a larger one.
func (c *Conn) inRead(f []byte) bool {
	if c.deep {
		return true
	}
	code := coap.Code(f[HeaderLen(f[0])-1])
	return code.IsResponse() || code == coap.Empty
}

// serveFrame serves one frame read, or the error of reading it; false
// when the connection is over.
func (c *Conn) serveFrame(f []byte, err error) bool {
	m := &c.dec
	if big := asOversize(err); big != nil {
		c.st.oversize.Add(1)
		if big.fatal || !big.code.IsRequest() {
			c.abort(fmt.Sprintf("message of %d bytes over Max-Message-Size %d", big.size, c.cfg.MaxMessageSize), 0)
			return false
		}
		// RFC 7252 §5.9.2.9 with Size1 (RFC 7959 §4): what fits.
		resp := &coap.Message{Code: coap.RequestEntityTooLarge, Token: big.token}
		resp.Options = resp.Options.SetUint(coap.Size1, uint32(c.cfg.MaxMessageSize))
		c.sendMsg(resp, nil, true)
		return true
	}
	if err != nil {
		c.closeWith(fmt.Errorf("stream: read: %w", err))
		return false
	}
	// Only keepalive reads the time of the last frame: without it, a
	// frame spares reading the clock.
	if c.cfg.Keepalive > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	c.st.received.Add(1)
	if err := Decode(m, f, c.t.ws()); err != nil {
		// §5.6: a message format error gets Abort.
		c.st.malformed.Add(1)
		c.abort("malformed message: "+err.Error(), 0)
		return false
	}
	select {
	case <-c.csm:
	default:
		if m.Code != CSM && m.Code != coap.Empty {
			// §3.3: the CSM must come first.
			c.abort("expected CSM first", 0)
			return false
		}
	}
	switch {
	case m.Code == coap.Empty:
		// §3.4: always allowed, always ignored.
	case IsSignal(m.Code):
		if !c.signal(m) {
			return false
		}
	case m.Code.IsRequest():
		if !c.request(m) {
			return false
		}
	case m.Code.IsResponse():
		c.response(m)
	default:
		// Classes 1 and 6 are reserved (RFC 7252 §12.1).
		c.st.malformed.Add(1)
	}
	return true
}

// asOversize is err as an *oversize, nil for nil: errors.As on a
// variable of the loop would allocate it for every frame.
func asOversize(err error) *oversize {
	if err == nil {
		return nil
	}
	var big *oversize
	if errors.As(err, &big) {
		return big
	}
	return nil
}

// request hands a request to the handler: on the reader itself when
// Config.Inline picks it, else on a goroutine of its own. At MaxInflight
// requests in progress the reader waits for a slot: the peer's further
// requests wait in TCP's buffers, not in ours.
func (c *Conn) request(m *coap.Message) bool {
	if c.cfg.Handler == nil {
		// §3.3: a side without a server answers 5.01.
		c.sendMsg(&coap.Message{Code: coap.NotImplemented, Token: m.Token}, nil, true)
		return true
	}
	// A free slot, the usual case, is taken without a select of two
	// cases.
	select {
	case c.slots <- struct{}{}:
	default:
		select {
		case c.slots <- struct{}{}:
		case <-c.ctx.Done():
			return false
		}
	}
	c.st.requests.Add(1)
	w := &writer{c: c, tokLen: uint8(len(m.Token))}
	copy(w.tok[:], m.Token)
	req := &coap.Request{Msg: m.Clone(), Peer: c.peer, Secure: c.secure, Identity: c.identity, Conn: c.id}
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
	if c.cfg.Inline != nil && c.cfg.Inline(req) {
		c.deep = true
		if st, ok := c.t.(*streamTransport); ok && st.raw != nil && !st.resting {
			st.restIn(c.cfg.rest)
		}
		c.st.inline.Add(1)
		c.serveInline(w, req)
		return true
	}
	c.wg.Add(1)
	go c.serve(w, req)
	return true
}

func (c *Conn) serve(w *writer, req *coap.Request) {
	defer c.wg.Done()
	err := c.cfg.Handler.ServeCoAP(c.handlerCx, w, req)
	if errors.Is(err, coap.ErrLater) {
		w.answersLater()
		return
	}
	w.Finish(err)
}

// serveInline runs the handler on the reader, as the endpoint runs its
// Inline requests: what Later registered starts once the chain has
// returned and the writer knows that the answer comes later, so that the
// answer ends the request whichever goroutine writes it.
func (c *Conn) serveInline(w *writer, req *coap.Request) {
	if c.runner == nil {
		c.runner = coap.NewRunner(c.handlerCx, true)
	}
	err := c.runner.Serve(c.cfg.Handler, w, req)
	if errors.Is(err, coap.ErrLater) {
		w.answersLater()
		c.runner.Start()
		return
	}
	c.runner.Start()
	w.Finish(err)
}

// requestDone frees a request's slot and sends the Pongs and the close
// that waited for it.
func (c *Conn) requestDone() {
	<-c.slots
	c.mu.Lock()
	c.inflight--
	var due [][]byte
	keep := c.custody[:0]
	for _, p := range c.custody {
		if p.waiting--; p.waiting == 0 {
			due = append(due, p.token)
		} else {
			keep = append(keep, p)
		}
	}
	c.custody = keep
	release := c.release && c.inflight == 0
	c.mu.Unlock()
	for _, tok := range due {
		c.pong(tok, true)
	}
	if release {
		c.closeAfterFlush(errors.New("stream: released by peer"))
	}
}

// response matches a response to one of our requests by token.
func (c *Conn) response(m *coap.Message) {
	k := tokenKey(m.Token)
	c.mu.Lock()
	cl, ok := c.calls[k]
	if !ok {
		c.mu.Unlock()
		c.st.unmatched.Add(1)
		return
	}
	if !cl.got {
		cl.got = true
		if cl.notify == nil || !m.Options.Has(coap.Observe) || m.Code.Class() != 2 {
			delete(c.calls, k)
		}
		c.mu.Unlock()
		cl.ch <- m.Clone()
		return
	}
	c.mu.Unlock()
	// §7.1: notifications come in order; the Observe value is not needed
	// for that, but travels as it came.
	cl.notify(m.Clone())
	if m.Code.Class() != 2 || !m.Options.Has(coap.Observe) {
		// A final notification (an error, or no Observe) ends it
		// (RFC 7641 §3.2).
		c.mu.Lock()
		delete(c.calls, k)
		c.mu.Unlock()
	}
}

// tokenKey packs a token of up to 8 bytes.
func tokenKey(tok []byte) uint64 {
	var b [8]byte
	copy(b[8-len(tok):], tok)
	return binary.BigEndian.Uint64(b[:]) ^ uint64(len(tok))<<56
}
