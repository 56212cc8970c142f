package coap

// The server half of the endpoint: requests handed to the Handler, on a
// reader or a worker, and answered through a responseWriter, piggybacked
// or as a separate response after an empty ACK (§5.2).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/internal/clock"
)

func (e *Endpoint) receiveRequest(inline context.Context, m *Message, peer netip.AddrPort) {
	if m.Type != Confirmable && m.Type != NonConfirmable {
		// A request in an ACK or RST is a format error (§4.2, §4.3).
		e.stats.malformed.Add(1)
		return
	}
	k := exKey{peer, m.MID}
	now := e.clock.Now()
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
	w.typeLocked(&out)
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

// typeLocked gives the response its type and message ID: piggybacked in
// the ACK, a separate response, or a NON; w.mu is held.
func (w *responseWriter) typeLocked(out *Message) {
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

// empty reports whether no CON request waits for its handler.
func (l *slowList) empty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head == nil
}

// ackEvery is how often ackLoop looks for CON requests due an empty ACK:
// a quarter of AckDelay, so that the ACK goes out between AckDelay and
// 1.25 AckDelay; at least every housekeepEvery, at most every millisecond.
func ackEvery(ackDelay time.Duration) time.Duration {
	return max(min(ackDelay/4, housekeepEvery), time.Millisecond)
}

// ackLoop sends the empty ACKs that fall due and keeps house, at each
// tick of t; it re-arms t after each.
func (e *Endpoint) ackLoop(t clock.Timer, tick <-chan struct{}) {
	defer e.wg.Done()
	defer t.Stop()
	every := ackEvery(e.cfg.AckDelay)
	last := e.clock.Now()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-tick:
			now := e.clock.Now()
			for _, w := range e.slow.due(now, e.cfg.AckDelay) {
				w.emptyACK()
			}
			if now.Sub(last) >= housekeepEvery {
				last = now
				e.housekeep(now)
			}
			t.Reset(every)
		}
	}
}
