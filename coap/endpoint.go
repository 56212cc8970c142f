package coap

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/internal/clock"
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
	// Clock is the time the message layer keeps: retransmissions,
	// deadlines of Go, empty ACKs after AckDelay, deduplication and
	// housekeeping. Default clock.System; tests move a clocktest.Fake.
	Clock clock.Clock
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

// Endpoint is the CoAP message layer (RFC 7252 §4) over one Transport: it
// deduplicates, acknowledges, retransmits and matches responses to
// requests, for a server (Handler) and a client (Do) at once. This file
// holds its configuration, life cycle and reader; the roles are in
// server.go and client.go, and what keeps exchanges reliable (message
// IDs, deduplication, retransmission) in reliability.go.
type Endpoint struct {
	t         Transport
	cfg       EndpointConfig
	log       *slog.Logger
	clock     clock.Clock
	lifetime  time.Duration
	start     time.Time // the monotonic origin of dedup expiry times
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	midMu     sync.Mutex
	mids      map[netip.AddrPort]uint16 // guarded by midMu: last ID per peer
	oldMids   map[netip.AddrPort]uint16 // guarded by midMu: mids before the last rotation
	midsAt    time.Time                 // guarded by midMu: the last rotation
	stats     counters
	closeOnce sync.Once
	closeErr  error
	readers   sync.WaitGroup
	jobs      chan job     // idle workers wait here
	slow      slowList     // CON requests waiting for their handler
	nons      nonRing      // recent NONs whose RST someone wants to hear of
	idle      atomic.Int32 // workers waiting on jobs

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
	// The CONs' timers (reliability.go): the heap of what is due, and the
	// one clock timer, armed for armedAt, that runs it.
	timers  conTimers   // guarded by mu
	timer   clock.Timer // guarded by mu: nil until the first CON
	armedAt int64       // guarded by mu: on the monotonic clock, or notArmed
	groups  groupCalls  // group requests by token (group.go)
	peaks   peaks       // guarded by mu: the most entries of each map
	pushes  int         // guarded by mu: seenQ pushes since the last housekeeping
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
	clk := cfg.Clock
	if clk == nil {
		clk = clock.System
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		t:        t,
		cfg:      cfg,
		log:      log,
		clock:    clk,
		lifetime: cfg.Params.ExchangeLifetime(),
		start:    clk.Now(),
		ctx:      ctx,
		cancel:   cancel,
		jobs:     make(chan job),
		seen:     make(map[exKey]seen),
		pending:  make(map[exKey]*outCon),
		calls:    make(map[tokKey]*call),
		armedAt:  notArmed,
	}
	e.SetInflightLimits(cfg.MaxInflight, cfg.MaxInflightPerClient, cfg.ShareMaxAge)
	e.mids, e.midsAt = make(map[netip.AddrPort]uint16), e.start
	// Armed here, not in the goroutine: a test that moves a fake clock
	// right after NewEndpoint finds the tick already waiting.
	tick := make(chan struct{}, 1)
	acks := clk.AfterFunc(ackEvery(cfg.AckDelay), func() {
		select {
		case tick <- struct{}{}:
		default:
		}
	})
	e.wg.Add(1)
	go e.ackLoop(acks, tick)
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
	e.closeOnce.Do(func() {
		e.cancel()
		e.closeErr = e.t.Close()
		e.readers.Wait()
		e.mu.Lock()
		var fins []func(*Message, error)
		if e.timer != nil {
			e.timer.Stop()
		}
		for _, p := range e.timers {
			p.at = 0
		}
		e.timers, e.armedAt = nil, notArmed
		for k, p := range e.pending {
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
	wake := make(chan struct{})
	t := e.clock.AfterFunc(pause, func() { close(wake) })
	defer t.Stop()
	select {
	case <-e.ctx.Done():
		return true
	case <-wake:
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

func rstBytes(mid uint16) []byte {
	b := make([]byte, 4)
	b[0] = 1<<6 | byte(Reset)<<4
	binary.BigEndian.PutUint16(b[2:], mid)
	return b
}
