package coap

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
)

// EndpointConfig configures the message layer on one Transport.
type EndpointConfig struct {
	Params Params
	// Handler serves incoming requests; nil rejects them with RST.
	Handler Handler
	// Secure marks requests from this transport as coaps (DTLS).
	Secure bool
	// Accept, when set, filters datagrams by source before anything else
	// is done with them: a refused peer gets no answer and costs no state.
	Accept func(peer netip.AddrPort) bool
	// AckDelay is how long a handler may take before a CON request gets an
	// empty ACK and the answer follows as a separate response (§5.2.2).
	// Default 1 s, well inside the client's first ACK_TIMEOUT.
	AckDelay time.Duration
	// DedupLimit bounds the remembered exchanges of §4.5; the oldest is
	// forgotten first. Default 16384.
	DedupLimit int
	// MaxInflight bounds requests being handled at once, those Local
	// picks aside; beyond it a request is answered 5.03 with Max-Age 1.
	// Default 4096.
	MaxInflight int
	// MaxInflightPerClient bounds one client's share of MaxInflight: the
	// requests in flight from one IPv4 address, or from one IPv6 /64. A
	// request beyond it is answered 5.03 with Max-Age ShareMaxAge, and the
	// other clients do not notice. Default 0: no share. The same two
	// bounds apply to the separate responses (CON) a client has not
	// acknowledged: past them, a separate response goes as a NON.
	MaxInflightPerClient int
	// ShareMaxAge is about when a client over its share may find a slot
	// again: when the exchanges it has in flight have ended. Rounded up
	// to whole seconds; default 3 s.
	ShareMaxAge time.Duration
	// Local, when set, picks the requests the handler answers at once,
	// from what it holds, without waiting on anything and without side
	// effects: a proxy's own resources. They are served on the reader
	// goroutine and take no slot of MaxInflight, so that a pool full of
	// requests waiting on an upstream, or a client over its share,
	// delays none of them; and, handled in an idempotent fashion, they
	// are not remembered once answered, whatever their method (§4.5): a
	// duplicate is served again. Local itself runs on the reader and must
	// be quick.
	Local func(r *Request) bool
	// Inline, when set, picks the requests whose handler runs on the
	// reader goroutine instead of a worker: those whose way through the
	// handler never blocks, since it answers at once or through Later.
	// This spares the hand-off to a worker and back, most of the cost of
	// a forwarded request. Inline itself runs on the reader and must be
	// quick.
	Inline func(r *Request) bool
	// Readers is how many goroutines read the transport at once, each
	// serving its Inline requests itself; default 1. More than one lets
	// inline requests use several cores; the transport's ReadFrom must
	// then allow concurrent calls (UDP's does).
	Readers int
	// OnAck, when set, hears of every CON this endpoint sent that its
	// peer acknowledged (an empty ACK, or a piggybacked response with the
	// request's token): the peer receives at its address, which is what
	// amplification mitigation asks to know (RFC 9175 §2.4 item 3). It
	// runs on the reader goroutine and must be quick.
	OnAck  func(peer netip.AddrPort)
	Logger *slog.Logger
}

// Stats are the message layer's counters.
type Stats struct {
	Received        uint64 // datagrams read
	Sent            uint64 // datagrams written, retransmissions included
	Malformed       uint64 // datagrams that failed to decode (dropped or RST)
	Duplicates      uint64 // requests and CON responses recognised by §4.5
	Retransmissions uint64 // CON retransmissions sent
	Timeouts        uint64 // CONs given up after MAX_RETRANSMIT
	ResetsSent      uint64
	Busy            uint64 // requests refused because MaxInflight was reached
	ClientBusy      uint64 // requests refused because their client had MaxInflightPerClient
	SeparateNON     uint64 // separate responses sent NON: the client had its share of CONs unacknowledged
	Local           uint64 // requests picked by Local: served on a reader, without a slot
	Inflight        int    // requests holding a slot now
	Unmatched       uint64 // responses matching no exchange
	Refused         uint64 // datagrams dropped by Accept
	Inline          uint64 // requests served on a reader goroutine (Inline)
	// Reads counts the reads that returned datagrams; Received/Reads is
	// how many one read took on average (BatchReader).
	Reads uint64
	// ICMP counts the network's reports of datagrams from this endpoint
	// that did not arrive (ICMPError); Unreachable those that quoted what
	// the endpoint sent (RFC 7252 §4.2) and so ended exchanges or
	// notifications with ErrUnreachable.
	ICMP, Unreachable uint64
}

type counters struct {
	received, sent, malformed, duplicates, retransmissions, timeouts, resetsSent, busy, clientBusy, separateNON, local, unmatched, refused, inline, reads, icmp, unreachable atomic.Uint64
}

// exKey names an exchange by peer and message ID (§4.5).
type exKey struct {
	peer netip.AddrPort
	mid  uint16
}

// tokKey names a client exchange by peer and token (§5.3.2). Tokens the
// endpoint allocates are 8 bytes, so they fit a uint64.
type tokKey struct {
	peer netip.AddrPort
	tok  uint64
}

type seen struct {
	expires int64  // nanoseconds on the endpoint's monotonic clock (since start)
	resp    []byte // what to send again for a duplicate; nil while in progress
}

type seenItem struct {
	key     exKey
	expires int64
}

// outCon is a CON this endpoint sent and retransmits until ACK or RST.
type outCon struct {
	key     exKey
	data    []byte
	timeout time.Duration
	tries   int
	timer   *time.Timer
	fin     func(ack *Message, err error) // called once, without e.mu held
	token   []byte                        // of a request: a piggybacked response must carry it
	// g is the exchange of Go this CON carries, if any: its timer also
	// keeps the exchange's deadline, and it hears of an RST or time-out
	// instead of fin.
	g *goCall
}

// wait is how long the CON's timer waits: to the next retransmission,
// or to the deadline of its exchange if that comes first.
func (p *outCon) wait() time.Duration {
	if p.g != nil {
		if d := time.Until(p.g.deadline); d < p.timeout {
			return max(d, 0)
		}
	}
	return p.timeout
}

// call is a client exchange awaiting its response.
type call struct {
	ch chan callResult // buffered 1; nil for a call of Go
	// g, for a call of Go, receives the first result; fired makes it
	// once.
	g     *goCall
	fired atomic.Bool
	// notify, when set, receives every response after the first: the
	// notifications of an observation (RFC 7641 §3.2). It runs on the
	// reader goroutine and must not block.
	notify func(*Message)
	first  atomic.Bool
	// deregister marks the GET with Observe=1 of Observation.Cancel: it
	// shares the observation's token, but a message with Observe is a
	// notification the origin sent before it saw the deregistration, not
	// the answer to it (RFC 7641 §3.6: that answer has no Observe).
	deregister bool
}

type callResult struct {
	msg *Message
	err error
}

// Endpoint is the CoAP message layer (RFC 7252 §4) over one Transport: it
// deduplicates, acknowledges, retransmits and matches responses to
// requests, for a server (Handler) and a client (Do) at once.
type Endpoint struct {
	t        Transport
	cfg      EndpointConfig
	log      *slog.Logger
	lifetime time.Duration
	start    time.Time // the monotonic origin of dedup expiry times
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	midMu    sync.Mutex
	mids     map[netip.AddrPort]uint16 // guarded by midMu: last ID per peer
	oldMids  map[netip.AddrPort]uint16 // guarded by midMu: mids before the last rotation
	midsAt   time.Time                 // guarded by midMu: the last rotation
	stats    counters
	closeMu  sync.Once
	closeErr error
	readers  sync.WaitGroup
	jobs     chan job     // idle workers wait here
	slow     slowList     // CON requests waiting for their handler
	nons     nonRing      // recent NONs whose RST someone wants to hear of
	idle     atomic.Int32 // workers waiting on jobs

	slots   inflight // requests in flight, in all and per client
	unacked inflight // separate responses (CON) not acknowledged yet, in all and per client
	// shareMaxAge is the Max-Age, in seconds, of the 5.03 for a client
	// over its share.
	shareMaxAge atomic.Int64

	mu      sync.Mutex
	seen    map[exKey]seen    // guarded by mu: §4.5 deduplication
	seenQ   seenRing          // guarded by mu: FIFO of seen keys by expiry
	pending map[exKey]*outCon // guarded by mu: our CONs awaiting ACK/RST
	calls   map[tokKey]*call  // guarded by mu: client exchanges by token
	groups  groupCalls        // group requests by token (group.go)
	peaks   peaks             // guarded by mu: the most entries of each map
	pushes  int               // guarded by mu: seenQ pushes since the last housekeeping
}

// NewEndpoint starts the message layer on t: one reader goroutine, ended by
// Close, which also closes t.
func NewEndpoint(t Transport, cfg EndpointConfig) *Endpoint {
	cfg.Params = cfg.Params.withDefaults()
	if cfg.AckDelay <= 0 {
		cfg.AckDelay = time.Second
	}
	if cfg.DedupLimit <= 0 {
		cfg.DedupLimit = 16384
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = defaultMaxInflight
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		t:        t,
		cfg:      cfg,
		log:      log,
		lifetime: cfg.Params.ExchangeLifetime(),
		start:    time.Now(),
		ctx:      ctx,
		cancel:   cancel,
		jobs:     make(chan job),
		seen:     make(map[exKey]seen),
		pending:  make(map[exKey]*outCon),
		calls:    make(map[tokKey]*call),
	}
	e.SetInflightLimits(cfg.MaxInflight, cfg.MaxInflightPerClient, cfg.ShareMaxAge)
	e.mids, e.midsAt = make(map[netip.AddrPort]uint16), e.start
	e.wg.Add(1)
	go e.ackLoop()
	for range max(cfg.Readers, 1) {
		e.readers.Add(1)
		go e.readLoop()
	}
	return e
}

// Close stops the endpoint: it closes the transport, fails exchanges in
// flight with ErrClosed and waits for the reader and handlers to return.
// It is idempotent.
func (e *Endpoint) Close() error {
	e.closeMu.Do(func() {
		e.cancel()
		e.closeErr = e.t.Close()
		e.readers.Wait()
		e.mu.Lock()
		var fins []func(*Message, error)
		for k, p := range e.pending {
			p.timer.Stop()
			delete(e.pending, k)
			if p.fin != nil {
				fins = append(fins, p.fin)
			}
		}
		var calls []*call
		for k, c := range e.calls {
			calls = append(calls, c)
			delete(e.calls, k)
		}
		e.mu.Unlock()
		for _, c := range calls {
			c.deliver(callResult{err: ErrClosed})
		}
		for _, fin := range fins {
			fin(nil, ErrClosed) // "called once", closing included
		}
		e.wg.Wait()
	})
	return e.closeErr
}

// Secure reports whether the endpoint's transport is DTLS.
func (e *Endpoint) Secure() bool { return e.cfg.Secure }

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	s := &e.stats
	return Stats{
		Received: s.received.Load(), Sent: s.sent.Load(), Malformed: s.malformed.Load(),
		Duplicates: s.duplicates.Load(), Retransmissions: s.retransmissions.Load(),
		Timeouts: s.timeouts.Load(), ResetsSent: s.resetsSent.Load(), Busy: s.busy.Load(),
		ClientBusy: s.clientBusy.Load(), SeparateNON: s.separateNON.Load(), Local: s.local.Load(), Inflight: e.slots.count(),
		Unmatched: s.unmatched.Load(), Refused: s.refused.Load(), Inline: s.inline.Load(),
		Reads: s.reads.Load(), ICMP: s.icmp.Load(), Unreachable: s.unreachable.Load(),
	}
}

// maxMIDPeers bounds the per-peer message-ID counters; past it one peer's
// counter is forgotten for each new peer, and starts again from a random
// value: a reuse within EXCHANGE_LIFETIME becomes unlikely, not impossible.
const maxMIDPeers = 16384

// allocMID returns the next message ID for a peer. Each peer has its own
// sequence (§4.4: an ID must not be reused with the same endpoint within
// EXCHANGE_LIFETIME), so traffic to one peer does not use up the IDs
// another sees. A peer's counter is forgotten once no ID has been taken
// for it for an EXCHANGE_LIFETIME (rotateMIDs): all it was used for has
// expired by then, and a fresh start is as good as the old sequence.
func (e *Endpoint) allocMID(peer netip.AddrPort) uint16 {
	e.midMu.Lock()
	defer e.midMu.Unlock()
	v, ok := e.mids[peer]
	if !ok {
		if v, ok = e.oldMids[peer]; ok {
			delete(e.oldMids, peer)
		} else {
			if len(e.mids)+len(e.oldMids) >= maxMIDPeers {
				forgetOne(e.oldMids, e.mids)
			}
			v = uint16(rand.Uint32())
		}
	}
	v++
	e.mids[peer] = v
	return v
}

// forgetOne deletes one entry, whichever the map gives, of the first of
// ms that has any.
func forgetOne(ms ...map[netip.AddrPort]uint16) {
	for _, m := range ms {
		for k := range m {
			delete(m, k)
			return
		}
	}
}

// rotateMIDs forgets the counters of the peers no ID was taken for since
// the rotation before the last: a rotation every EXCHANGE_LIFETIME keeps
// each counter at least that long after its last use (§4.4), and gives
// the maps' room back once the peers of a flood are gone.
func (e *Endpoint) rotateMIDs(now time.Time) {
	e.midMu.Lock()
	defer e.midMu.Unlock()
	if now.Sub(e.midsAt) < e.lifetime {
		return
	}
	e.midsAt = now
	if len(e.mids) == 0 {
		e.oldMids = nil
		return
	}
	e.oldMids, e.mids = e.mids, make(map[netip.AddrPort]uint16)
}

func (e *Endpoint) write(peer netip.AddrPort, b []byte) {
	if err := e.t.WriteTo(e.ctx, b, peer); err != nil {
		if e.ctx.Err() == nil {
			e.log.Debug("write failed", "peer", peer, "err", err)
		}
		return
	}
	e.stats.sent.Add(1)
}

// maxDatagram bounds what the reader accepts; larger datagrams are
// truncated by the transport and fail to decode.
const maxDatagram = 64 << 10

// batchSize is how many datagrams a reader takes with one system call
// where the transport can (BatchReader).
const batchSize = 8

func (e *Endpoint) readLoop() {
	defer e.readers.Done()
	var m Message
	inline := context.WithValue(e.ctx, laterKey{}, &laterState{inline: true})
	if br, ok := e.t.(BatchReader); ok {
		if b, err := br.NewBatch(batchSize); err == nil {
			defer b.Close() // m may alias it: m goes with the reader
			e.readBatches(inline, &m, b)
			return
		}
	}
	buf := make([]byte, maxDatagram)
	var fails int
	for {
		n, peer, err := e.t.ReadFrom(buf)
		if err != nil {
			if e.icmpRead(err) {
				fails = 0
				continue
			}
			if e.readEnded(err, &fails) {
				return
			}
			continue
		}
		fails = 0
		e.stats.reads.Add(1)
		e.accept(inline, &m, buf[:n], peer)
	}
}

// readBatches is readLoop on a BatchReader.
func (e *Endpoint) readBatches(inline context.Context, m *Message, b Batch) {
	var fails int
	for {
		n, err := b.Read()
		if err != nil {
			if e.icmpRead(err) {
				fails = 0
				continue
			}
			if e.readEnded(err, &fails) {
				return
			}
			continue
		}
		fails = 0
		e.stats.reads.Add(1)
		for i := range n {
			d, peer, truncated := b.Datagram(i)
			if truncated {
				// Cannot happen with 64 KiB slots; were it to, the
				// datagram is malformed, not a shorter message.
				e.stats.received.Add(1)
				e.stats.malformed.Add(1)
				continue
			}
			e.accept(inline, m, d, peer)
		}
	}
}

// readEnded reports whether a read error ends the reader: the endpoint
// or its transport was closed. Other errors are logged, and reading goes
// on after a pause that doubles with each failure in a row, from 1 ms to
// 100 ms, so that a transport failing at once every time does not spin a
// core; fails counts them.
func (e *Endpoint) readEnded(err error, fails *int) bool {
	if e.ctx.Err() != nil || errors.Is(err, ErrClosed) || isClosedErr(err) {
		return true
	}
	e.log.Debug("read failed", "err", err)
	pause := min(time.Millisecond<<min(*fails, 7), 100*time.Millisecond)
	*fails++
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-e.ctx.Done():
		return true
	case <-t.C:
		return false
	}
}

// accept counts a datagram, drops it if Accept refuses its sender, and
// handles it otherwise.
func (e *Endpoint) accept(inline context.Context, m *Message, b []byte, peer netip.AddrPort) {
	e.stats.received.Add(1)
	if e.cfg.Accept != nil && !e.cfg.Accept(peer) {
		e.stats.refused.Add(1)
		return
	}
	e.receive(inline, m, b, peer)
}

// receive handles one datagram; it runs on the reader goroutine, so
// nothing here blocks on I/O other than sending small replies.
// inline is the reader's own handler context (coap.Inline reports true).
func (e *Endpoint) receive(inline context.Context, m *Message, b []byte, peer netip.AddrPort) {
	if err := m.Decode(b); err != nil {
		e.stats.malformed.Add(1)
		// §4.2, §4.3: a CON that cannot be processed is rejected with RST;
		// anything else is silently ignored.
		if len(b) >= 4 && b[0]>>6 == 1 && Type(b[0]>>4&3) == Confirmable {
			e.sendRST(peer, binary.BigEndian.Uint16(b[2:4]))
		}
		return
	}
	switch {
	case m.Code == Empty:
		e.receiveEmpty(m, peer)
	case m.Code.IsRequest():
		e.receiveRequest(inline, m, peer)
	case m.Code.IsResponse():
		e.receiveResponse(m, peer)
	default:
		// Reserved classes 1, 6, 7 (§12.1): reject a CON, ignore the rest.
		e.stats.malformed.Add(1)
		if m.Type == Confirmable {
			e.sendRST(peer, m.MID)
		}
	}
}

func (e *Endpoint) sendRST(peer netip.AddrPort, mid uint16) {
	e.stats.resetsSent.Add(1)
	e.write(peer, rstBytes(mid))
}

func (e *Endpoint) sendEmptyACK(peer netip.AddrPort, mid uint16) []byte {
	b := make([]byte, 4)
	b[0] = 1<<6 | byte(Acknowledgement)<<4
	binary.BigEndian.PutUint16(b[2:], mid)
	e.write(peer, b)
	return b
}

func (e *Endpoint) receiveEmpty(m *Message, peer netip.AddrPort) {
	switch m.Type {
	case Confirmable:
		// §4.3: an empty CON ("CoAP ping") is answered with RST.
		e.sendRST(peer, m.MID)
	case Acknowledgement, Reset:
		var err error
		if m.Type == Reset {
			err = ErrReset
		}
		k := exKey{peer, m.MID}
		if !e.settle(k, nil, err) && m.Type == Reset {
			if done := e.nons.take(k); done != nil {
				done(ErrReset)
			}
		}
	}
}

// settle ends the retransmission of one of our CONs.
func (e *Endpoint) settle(k exKey, ack *Message, err error) bool {
	e.mu.Lock()
	p, ok := e.pending[k]
	if ok {
		delete(e.pending, k)
		if p.g == nil {
			p.timer.Stop() // an exchange of Go keeps it for its deadline
		}
	}
	e.mu.Unlock()
	if ok && err == nil && e.cfg.OnAck != nil {
		e.cfg.OnAck(k.peer)
	}
	switch {
	case ok && p.fin != nil:
		p.fin(ack, err)
	case ok && p.g != nil && err != nil:
		p.g.deliver(callResult{err: err})
	}
	return ok
}

// dedup records a CON or NON with this key; it reports whether the message
// was seen before and, if so, the reply to repeat.
func (e *Endpoint) dedup(k exKey, at time.Time) (dup bool, reply []byte) {
	now := int64(at.Sub(e.start))
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.seen[k]; ok && now < s.expires {
		return true, s.resp
	}
	// Forget what has expired, then the oldest while over the limit: O(1)
	// amortised per datagram, bounded memory.
	e.expireSeen(now, e.cfg.DedupLimit)
	exp := now + int64(e.lifetime)
	e.seen[k] = seen{expires: exp}
	e.peaks.seen = max(e.peaks.seen, len(e.seen))
	e.seenQ.push(seenItem{k, exp})
	e.pushes++
	return false, nil
}

// expireSeen forgets the exchanges that have expired by now, and the
// oldest while limit or more are remembered; e.mu is held.
func (e *Endpoint) expireSeen(now int64, limit int) {
	for e.seenQ.len() > 0 {
		it := e.seenQ.peek()
		if now <= it.expires && e.seenQ.len() < limit {
			break
		}
		if e.live(it) {
			delete(e.seen, it.key)
		}
		e.seenQ.pop()
	}
}

// live reports whether a ring item is still its exchange's: a GET
// answered and forgotten, or an exchange remembered again since, leaves
// an item that stands for nothing until it expires; e.mu is held.
func (e *Endpoint) live(it seenItem) bool {
	s, ok := e.seen[it.key]
	return ok && s.expires == it.expires
}

// forget drops a remembered exchange (its ring slot is reclaimed in turn).
func (e *Endpoint) forget(k exKey) {
	e.mu.Lock()
	delete(e.seen, k)
	e.mu.Unlock()
}

func (e *Endpoint) remember(k exKey, reply []byte) {
	e.mu.Lock()
	if s, ok := e.seen[k]; ok {
		s.resp = reply
		e.seen[k] = s
	}
	e.mu.Unlock()
}

// seenRing is a growable ring buffer of seen keys in arrival order (and so
// in expiry order: the lifetime is fixed).
type seenRing struct {
	buf  []seenItem
	head int
	n    int
}

func (r *seenRing) len() int          { return r.n }
func (r *seenRing) at(i int) seenItem { return r.buf[(r.head+i)%len(r.buf)] }
func (r *seenRing) peek() seenItem    { return r.buf[r.head] }
func (r *seenRing) pop()              { r.buf[r.head] = seenItem{}; r.head = (r.head + 1) % len(r.buf); r.n-- }
func (r *seenRing) push(it seenItem) {
	if r.n == len(r.buf) {
		grown := make([]seenItem, max(64, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = it
	r.n++
}

func (e *Endpoint) receiveRequest(inline context.Context, m *Message, peer netip.AddrPort) {
	if m.Type != Confirmable && m.Type != NonConfirmable {
		// A request in an ACK or RST is a format error (§4.2, §4.3).
		e.stats.malformed.Add(1)
		return
	}
	k := exKey{peer, m.MID}
	now := time.Now()
	if dup, reply := e.dedup(k, now); dup {
		e.stats.duplicates.Add(1)
		if reply != nil {
			e.write(peer, reply)
		}
		return
	}
	if e.cfg.Handler == nil {
		if m.Type == Confirmable {
			e.sendRST(peer, m.MID)
		}
		return
	}
	w := &responseWriter{e: e, peer: peer, mid: m.MID, reqType: m.Type, tokLen: uint8(len(m.Token)), safe: m.Code.IsSafe()}
	copy(w.tok[:], m.Token)
	req := &Request{Msg: m.Clone(), Peer: peer, Secure: e.cfg.Secure}
	if pi, ok := e.t.(PeerIdentifier); ok {
		req.Identity = pi.PeerIdentity(peer)
	}
	if e.cfg.Local != nil && e.cfg.Local(req) {
		e.stats.local.Add(1)
		w.safe = true
		if m.Type == Confirmable {
			e.slow.add(w, now)
		}
		e.serve(inline, w, req)
		return
	}
	switch e.slots.take(clientOf(peer.Addr())) {
	case shareFull:
		e.stats.clientBusy.Add(1)
		w.busy(uint32(e.shareMaxAge.Load()))
		return
	case slotsFull:
		e.stats.busy.Add(1)
		w.busy(1)
		return
	}
	w.slot = true
	if m.Type == Confirmable {
		e.slow.add(w, now)
	}
	if e.cfg.Inline != nil && e.cfg.Inline(req) {
		e.stats.inline.Add(1)
		e.serve(inline, w, req)
		return
	}
	j := job{w, req}
	select {
	case e.jobs <- j: // an idle worker takes it
	default:
		e.wg.Add(1)
		go e.worker(j)
	}
}

// job is one request for a handler goroutine.
type job struct {
	w   *responseWriter
	req *Request
}

// maxIdleWorkers bounds the handler goroutines kept waiting for work.
// Reusing them spares each request a new goroutine whose stack grows
// through the chain again; past this many, a worker exits when done.
const maxIdleWorkers = 64

func (e *Endpoint) worker(j job) {
	defer e.wg.Done()
	ctx := context.WithValue(e.ctx, laterKey{}, &laterState{})
	for {
		e.serve(ctx, j.w, j.req)
		if e.idle.Add(1) > maxIdleWorkers {
			e.idle.Add(-1)
			return
		}
		select {
		case j = <-e.jobs:
			e.idle.Add(-1)
		case <-e.ctx.Done():
			e.idle.Add(-1)
			return
		}
	}
}

// serve runs the handler on ctx, a handler goroutine's context, and ends
// the request, unless the handler answers later (ErrLater): then the
// writer ends it when the answer comes, and what Later registered starts.
func (e *Endpoint) serve(ctx context.Context, w *responseWriter, req *Request) {
	s := ctx.Value(laterKey{}).(*laterState)
	err := e.cfg.Handler.ServeCoAP(ctx, w, req)
	if errors.Is(err, ErrLater) {
		w.mu.Lock()
		w.later = true
		if w.done {
			w.end() // answered before the handler returned
		}
		w.mu.Unlock()
		s.run()
		return
	}
	if len(s.starts) > 0 {
		// Later was called, yet the handler did not return ErrLater: the
		// answer has no one to end the request. Start it all the same.
		e.log.Warn("handler called Later but returned", "peer", w.peer, "method", req.Msg.Code, "err", err)
		s.run()
	}
	w.Finish(err)
}

func (e *Endpoint) receiveResponse(m *Message, peer netip.AddrPort) {
	k := exKey{peer, m.MID}
	switch m.Type {
	case Acknowledgement:
		// Piggybacked (§5.2.1): ends our CON's retransmission, if it
		// carries the request's token (§5.3.2). An ACK for nothing
		// pending is a duplicate or too late.
		e.mu.Lock()
		p, ok := e.pending[k]
		match := ok && string(p.token) == string(m.Token)
		e.mu.Unlock()
		if !match || !e.settle(k, nil, nil) {
			e.stats.unmatched.Add(1)
			return
		}
	case Reset:
		e.stats.malformed.Add(1)
		return
	default:
		// Separate response or notification: deliver once (§4.5); a
		// duplicate CON gets the same ACK or RST again.
		if dup, reply := e.dedup(k, time.Now()); dup {
			e.stats.duplicates.Add(1)
			if reply != nil {
				e.write(peer, reply)
			}
			return
		}
	}
	var c *call
	if len(m.Token) == 8 {
		e.mu.Lock()
		c = e.calls[tokKey{peer, binary.BigEndian.Uint64(m.Token)}]
		e.mu.Unlock()
	}
	if c != nil && c.deregister && m.Type != Acknowledgement && m.Options.Has(Observe) {
		c = nil // a late notification: rejected below (RFC 7641 §3.6)
	}
	if c == nil && e.groupResponse(m, peer, k) {
		return
	}
	if c == nil {
		e.stats.unmatched.Add(1)
		if m.Type != Acknowledgement {
			// §5.3.2, RFC 7641 §3.6: reject what we did not ask for.
			e.sendRST(peer, m.MID)
			if m.Type == Confirmable {
				e.remember(k, rstBytes(m.MID))
			}
		}
		return
	}
	if m.Type == Confirmable {
		e.remember(k, e.sendEmptyACK(peer, m.MID))
	}
	if c.notify != nil && c.first.Swap(true) {
		c.notify(m.Clone())
		return
	}
	c.deliver(callResult{msg: m.Clone()})
}

func rstBytes(mid uint16) []byte {
	b := make([]byte, 4)
	b[0] = 1<<6 | byte(Reset)<<4
	binary.BigEndian.PutUint16(b[2:], mid)
	return b
}

func (c *call) deliver(r callResult) {
	if c.g != nil {
		if c.fired.CompareAndSwap(false, true) {
			c.g.finish(r)
		}
		return
	}
	select {
	case c.ch <- r:
	default: // the first result wins
	}
}

// sendCON sends data reliably: retransmits with exponential back-off until
// an ACK or RST with the same MID, or MAX_RETRANSMIT (§4.2). fin is called
// once with the outcome.
func (e *Endpoint) sendCON(peer netip.AddrPort, mid uint16, data []byte, fin func(*Message, error)) {
	e.sendCONToken(peer, mid, nil, data, fin)
}

// sendCONToken is sendCON for a request: a piggybacked response is taken
// only with the request's token.
func (e *Endpoint) sendCONToken(peer netip.AddrPort, mid uint16, tok []byte, data []byte, fin func(*Message, error)) {
	if e.pendCON(peer, mid, tok, data, fin) {
		e.write(peer, data)
	}
}

// pendCON is sendCONToken but for the first transmission, which the
// caller makes when pendCON reports true (NotifyAll sends it in a batch).
// data is kept for the retransmissions.
func (e *Endpoint) pendCON(peer netip.AddrPort, mid uint16, tok []byte, data []byte, fin func(*Message, error)) bool {
	p := &outCon{key: exKey{peer, mid}, data: data, timeout: e.cfg.Params.initialTimeout(), fin: fin, token: tok}
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		if fin != nil {
			fin(nil, ErrClosed)
		}
		return false
	}
	e.pending[p.key] = p
	e.peaks.pending = max(e.peaks.pending, len(e.pending))
	p.timer = time.AfterFunc(p.timeout, func() { e.retransmit(p) })
	e.mu.Unlock()
	return true
}

// retransmit sends p again, or gives up after MAX_RETRANSMIT; it reports
// false when p is no longer pending.
func (e *Endpoint) retransmit(p *outCon) bool {
	e.mu.Lock()
	if e.pending[p.key] != p {
		e.mu.Unlock()
		return false
	}
	if p.tries >= e.cfg.Params.MaxRetransmit {
		delete(e.pending, p.key)
		e.mu.Unlock()
		e.stats.timeouts.Add(1)
		switch {
		case p.fin != nil:
			p.fin(nil, ErrTimeout)
		case p.g != nil:
			p.g.deliver(callResult{err: ErrTimeout})
		}
		return true
	}
	p.tries++
	p.timeout *= 2
	p.timer.Reset(p.wait())
	e.mu.Unlock()
	e.stats.retransmissions.Add(1)
	e.write(p.key.peer, p.data)
	return true
}

func (e *Endpoint) cancelCON(k exKey) {
	e.mu.Lock()
	if p, ok := e.pending[k]; ok {
		p.timer.Stop()
		delete(e.pending, k)
	}
	e.mu.Unlock()
}

// Do sends req to the peer and waits for its response. The endpoint sets
// the token and message ID; a CON is retransmitted per §4.2 and a separate
// response is awaited after an empty ACK (§5.2.2). req is not modified.
// Many calls may be in flight at once.
func (e *Endpoint) Do(ctx context.Context, to netip.AddrPort, req *Message) (*Message, error) {
	var tok [8]byte
	tv := rand.Uint64()
	binary.BigEndian.PutUint64(tok[:], tv)
	c := &call{ch: make(chan callResult, 1)}
	tk := tokKey{to, tv}
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	e.calls[tk] = c
	e.peaks.calls = max(e.peaks.calls, len(e.calls))
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.calls, tk)
		e.mu.Unlock()
	}()
	return e.exchange(ctx, to, req, tok[:], c)
}

// Go is Do without waiting: it sends req to the peer and calls done once,
// with the first response or the error: ErrTimeout, ErrReset,
// ErrUnreachable, ErrClosed, or context.DeadlineExceeded when no response
// came within timeout. done runs on the endpoint's reader goroutine or a
// timer's and must not block.
// It lets a handler answer through Later instead of holding a goroutine
// for the whole exchange.
func (e *Endpoint) Go(to netip.AddrPort, req *Message, timeout time.Duration, done func(*Message, error)) {
	now := time.Now()
	g := &goCall{e: e, done: done, deadline: now.Add(timeout)}
	tv := rand.Uint64()
	binary.BigEndian.PutUint64(g.tok[:], tv)
	out := *req
	out.Token = g.tok[:]
	out.MID = e.allocMID(to)
	if out.Type != NonConfirmable {
		out.Type = Confirmable
	}
	data, err := out.Marshal()
	if err != nil {
		done(nil, fmt.Errorf("coap: encode request: %w", err))
		return
	}
	g.call.g, g.tk = g, tokKey{to, tv}
	g.con = outCon{key: exKey{to, out.MID}, data: data, timeout: e.cfg.Params.initialTimeout(), token: g.tok[:], g: g}
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		done(nil, ErrClosed)
		return
	}
	e.calls[g.tk] = &g.call
	e.peaks.calls = max(e.peaks.calls, len(e.calls))
	wait := timeout
	if out.Type == Confirmable {
		e.pending[g.con.key] = &g.con
		e.peaks.pending = max(e.peaks.pending, len(e.pending))
		wait = min(wait, g.con.timeout)
	}
	g.con.timer = time.AfterFunc(wait, g.onTimer)
	e.mu.Unlock()
	e.write(to, data)
}

// goCall is an exchange of Go in one allocation: its call, its CON, and
// one timer for both the retransmissions (§4.2) and the deadline.
type goCall struct {
	call
	con      outCon
	e        *Endpoint
	tk       tokKey
	tok      [8]byte
	deadline time.Time
	done     func(*Message, error)
}

// onTimer retransmits the request, or fails the exchange at its
// deadline. After an empty ACK (§5.2.2) nothing is retransmitted, and the
// timer waits for the deadline alone.
func (g *goCall) onTimer() {
	if !time.Now().Before(g.deadline) {
		g.deliver(callResult{err: context.DeadlineExceeded})
		return
	}
	if !g.e.retransmit(&g.con) {
		g.e.mu.Lock()
		if !g.fired.Load() {
			g.con.timer.Reset(time.Until(g.deadline))
		}
		g.e.mu.Unlock()
	}
}

// finish ends the exchange with its first result.
func (g *goCall) finish(r callResult) {
	e := g.e
	e.mu.Lock()
	g.con.timer.Stop()
	if e.calls[g.tk] == &g.call {
		delete(e.calls, g.tk)
	}
	if e.pending[g.con.key] == &g.con {
		delete(e.pending, g.con.key)
	}
	e.mu.Unlock()
	g.done(r.msg, r.err)
}

// exchange sends req with the given token, registered as c, and waits for
// the first response.
func (e *Endpoint) exchange(ctx context.Context, to netip.AddrPort, req *Message, tok []byte, c *call) (*Message, error) {
	out := *req
	out.Token = tok
	out.MID = e.allocMID(to)
	if out.Type != NonConfirmable {
		out.Type = Confirmable
	}
	data, err := out.Marshal()
	if err != nil {
		return nil, fmt.Errorf("coap: encode request: %w", err)
	}
	if out.Type == Confirmable {
		e.sendCONToken(to, out.MID, tok, data, func(_ *Message, err error) {
			if err != nil {
				c.deliver(callResult{err: err})
			}
		})
		defer e.cancelCON(exKey{to, out.MID})
	} else {
		e.write(to, data)
	}
	select {
	case r := <-c.ch:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.ctx.Done():
		return nil, ErrClosed
	}
}

// responseWriter answers one request: piggybacked in the ACK when the
// handler is quick, else an empty ACK first and a separate response later
// (§5.2); a NON request gets a NON response (§5.2.3).
// Kept by an Observe hub for as long as the observer stays, so it is small.
type responseWriter struct {
	e       *Endpoint
	peer    netip.AddrPort
	tok     [MaxTokenLen]byte // the request's token, tokLen bytes (§3)
	tokLen  uint8
	mid     uint16 // the request's
	reqType Type
	safe    bool // GET or FETCH: idempotent, not remembered once answered
	slot    bool // holds a slot of MaxInflight, given back by end

	mu sync.Mutex
	// Links in the endpoint's list of CON requests not yet answered,
	// guarded by the list's mutex (slowList.mu).
	prev, next *responseWriter
	since      int64 // UnixNano of arrival, for slowList
	listed     bool
	acked      bool // guarded by mu: empty ACK sent
	later      bool // guarded by mu: the handler returned ErrLater
	ended      bool // guarded by mu: Finish ran, the request's slot is free
	done       bool // guarded by mu: response written
	code       Code // guarded by mu: the code of the response written
}

// Code is the code the request was answered with, Empty while it is not.
// (A CodeReporter, for the proxy's metrics.)
func (w *responseWriter) Code() Code {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.code
}

// token is the request's token.
func (w *responseWriter) token() []byte { return w.tok[:w.tokLen:w.tokLen] }

// key names the request's exchange (§4.5).
func (w *responseWriter) key() exKey { return exKey{w.peer, w.mid} }

func (w *responseWriter) answered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}

func (w *responseWriter) emptyACK() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || w.acked {
		return
	}
	w.acked = true
	w.e.remember(w.key(), w.e.sendEmptyACK(w.peer, w.mid))
}

// Finish ends the request (Finisher): when the handler returned err, or,
// for a request answered later, when its continuation gives up. An error
// not yet answered is answered; a CON that got no answer still gets its
// ACK, so the client stops retransmitting; the request's MaxInflight slot,
// if it has one, is freed. Only the first Finish counts.
func (w *responseWriter) Finish(err error) {
	if err != nil && !errors.Is(err, ErrLater) {
		if w.answered() {
			w.e.log.Debug("handler error after answering", "peer", w.peer, "err", err)
		} else {
			var ce *Error
			if !errors.As(err, &ce) {
				w.e.log.Warn("handler failed", "peer", w.peer, "err", err)
			}
			w.write(errorResponse(err), false)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.end()
}

// end frees the request's slot once; w.mu is held.
func (w *responseWriter) end() {
	if w.ended {
		return
	}
	w.ended = true
	w.e.slow.remove(w)
	if !w.done && !w.acked && w.reqType == Confirmable {
		w.acked = true
		w.e.remember(w.key(), w.e.sendEmptyACK(w.peer, w.mid))
	}
	if w.slot {
		w.e.slots.give(clientOf(w.peer.Addr()))
	}
}

func (w *responseWriter) WriteResponse(resp *Message) error {
	return w.write(resp, true)
}

// write answers; for a request answered later, the answer also ends it.
func (w *responseWriter) write(resp *Message, end bool) error {
	return w.writeAs(resp, end, false)
}

// writeAs is write; with prompt, a response that would go as a separate
// one (the CON request has had its empty ACK) is not sent: ErrSeparate.
func (w *responseWriter) writeAs(resp *Message, end, prompt bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ending := end && w.later
	if w.done {
		if ending {
			w.end()
		}
		return ErrAnswered
	}
	if prompt && w.reqType == Confirmable && w.acked {
		return ErrSeparate
	}
	w.done, w.code = true, resp.Code
	w.e.slow.remove(w)
	out := *resp
	out.Token = w.token()
	switch {
	case w.reqType == Confirmable && !w.acked:
		out.Type, out.MID = Acknowledgement, w.mid
	case w.reqType == Confirmable:
		// A separate response (§5.2.2) is a CON retransmitted until the
		// client acknowledges it, for up to MAX_TRANSMIT_WAIT: a client
		// that never does, a spoofed address above all, would have every
		// answer kept that long, and sent it five times. Past the client's
		// share of CONs unacknowledged (or the endpoint's), it goes as a
		// NON, which §5.2.2 allows.
		out.Type, out.MID = NonConfirmable, w.e.allocMID(w.peer)
		if w.e.unacked.take(clientOf(w.peer.Addr())) == slotTaken {
			out.Type = Confirmable
		} else {
			w.e.stats.separateNON.Add(1)
		}
	default:
		out.Type, out.MID = NonConfirmable, w.e.allocMID(w.peer)
	}
	// A response that is neither remembered (§4.5, below) nor
	// retransmitted is encoded into a pooled buffer: transports do not
	// keep what they are given to write.
	var data []byte
	var err error
	var pooled *[]byte
	if w.safe && out.Type != Confirmable {
		pooled = sendBufs.Get().(*[]byte)
		data, err = out.AppendMarshal((*pooled)[:0])
		defer func() {
			if cap(data) <= maxPooledSend {
				*pooled = data[:0]
				sendBufs.Put(pooled)
			}
		}()
	} else {
		data, err = out.Marshal()
	}
	if ending {
		// Before the answer leaves: a client that has it finds the slot
		// free.
		w.end()
	}
	if err != nil {
		return fmt.Errorf("coap: encode response: %w", err)
	}
	switch {
	case w.safe:
		// §4.5 lets the duplicate rule be relaxed for idempotent requests:
		// once a GET or FETCH is answered its exchange is forgotten, and a
		// late duplicate is served again. Memory then holds only requests
		// in progress, not every observer's registration for
		// EXCHANGE_LIFETIME.
		w.e.forget(w.key())
	case out.Type == Acknowledgement || w.reqType == NonConfirmable:
		// (A CON request answered separately keeps its empty ACK as the
		// answer to a duplicate.)
		w.e.remember(w.key(), data)
	}
	if out.Type == Confirmable {
		k := clientOf(w.peer.Addr())
		w.e.sendCON(w.peer, out.MID, data, func(*Message, error) { w.e.unacked.give(k) })
		return nil
	}
	w.e.write(w.peer, data)
	return nil
}

// sendBufs holds buffers for responses encoded only to be sent once;
// maxPooledSend bounds the ones kept.
var sendBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

const maxPooledSend = 2048

// slowList holds the CON requests whose handlers have not answered, in
// arrival order. One goroutine per endpoint sends the empty ACK for those
// older than AckDelay (§5.2.2): cheaper than a timer per request, and the
// ACK goes out between AckDelay and 1.25 AckDelay.
type slowList struct {
	mu         sync.Mutex
	head, tail *responseWriter // guarded by mu
}

func (l *slowList) add(w *responseWriter, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.since, w.listed, w.prev, w.next = now.UnixNano(), true, l.tail, nil
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (l *slowList) remove(w *responseWriter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unlink(w)
}

func (l *slowList) unlink(w *responseWriter) {
	if !w.listed {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next, w.listed = nil, nil, false
}

// due takes the requests older than d off the list.
func (l *slowList) due(now time.Time, d time.Duration) []*responseWriter {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*responseWriter
	for w := l.head; w != nil && now.UnixNano()-w.since >= int64(d); w = l.head {
		l.unlink(w)
		out = append(out, w)
	}
	return out
}

func (e *Endpoint) ackLoop() {
	defer e.wg.Done()
	t := time.NewTicker(max(min(e.cfg.AckDelay/4, housekeepEvery), time.Millisecond))
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			for _, w := range e.slow.due(now, e.cfg.AckDelay) {
				w.emptyACK()
			}
			if now.Sub(last) >= housekeepEvery {
				last = now
				e.housekeep(now)
			}
		}
	}
}

// empty reports whether no CON request waits for its handler.
func (l *slowList) empty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head == nil
}
