package coap

// The reliability half of the message layer (RFC 7252 §4): message IDs,
// deduplication of what peers send (§4.5), and retransmission of the CONs
// this endpoint sends until they are acknowledged or reset (§4.2).

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"
)

// exKey names an exchange by peer and message ID (§4.5).
type exKey struct {
	peer netip.AddrPort
	mid  uint16
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
// One is allocated for every CON sent, and one is part of every exchange
// of Go (goCall): it is kept to 120 bytes, so that it fills the 128-byte
// size class alone and a goCall the 192-byte one.
type outCon struct {
	key     exKey
	data    []byte
	timeout time.Duration
	// due is when its timer fires, in nanoseconds on the endpoint's
	// monotonic clock (since start); at is its place in e.timers plus
	// one, 0 when it is not there. Both guarded by e.mu.
	due   int64
	at    int32
	tries int32
	fin   func(ack *Message, err error) // called once, without e.mu held
	// tok is the token of a request, tokLen bytes: a piggybacked
	// response must carry it. The endpoint's own tokens have 8 bytes.
	tok    [8]byte
	tokLen uint8
	// g is the exchange of Go this CON carries, if any: its timer also
	// keeps the exchange's deadline, and it hears of an RST or time-out
	// instead of fin.
	g *goCall
}

// token is the request's token, empty for a response's CON.
func (p *outCon) token() []byte { return p.tok[:p.tokLen] }

// wait is how long the CON's timer waits from t (e.since): to the next
// retransmission, or to the deadline of its exchange if that comes first.
func (p *outCon) wait(t int64) time.Duration {
	if p.g != nil {
		if d := time.Duration(p.g.deadline - t); d < p.timeout {
			return max(d, 0)
		}
	}
	return p.timeout
}

// The timers of the CONs. An endpoint keeps the due times of its CONs
// (and the deadlines of Go's exchanges) in a heap, with one clock timer
// armed for the earliest: a timer each would cost every exchange an
// allocation of the runtime's, and its Stop, a lock of the runtime's
// timer heap, when the answer comes long before the timer is due, as it
// nearly always does. A timer left armed for a CON already answered
// fires for nothing and is armed again for the next one due.

// conTimers is a heap of CONs by due time (container/heap); e.mu guards it.
type conTimers []*outCon

func (h conTimers) Len() int           { return len(h) }
func (h conTimers) Less(i, j int) bool { return h[i].due < h[j].due }
func (h conTimers) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = int32(i+1), int32(j+1)
}
func (h *conTimers) Push(x any) {
	p := x.(*outCon)
	p.at = int32(len(*h) + 1)
	*h = append(*h, p)
}
func (h *conTimers) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.at = 0
	return p
}

// notArmed is e.armedAt while the endpoint's timer is not armed.
const notArmed = math.MaxInt64

// since is t on the endpoint's monotonic clock: nanoseconds since start.
func (e *Endpoint) since(t time.Time) int64 { return int64(t.Sub(e.start)) }

// schedule has p's timer fire d after now, whether or not it was
// pending; e.mu is held. After Close nothing is scheduled.
func (e *Endpoint) schedule(p *outCon, now time.Time, d time.Duration) {
	if e.ctx.Err() != nil {
		return
	}
	p.due = e.since(now) + int64(d)
	if p.at > 0 {
		heap.Fix(&e.timers, int(p.at-1))
	} else {
		heap.Push(&e.timers, p)
	}
	if p.due >= e.armedAt {
		return // the timer fires before p is due, and is armed again then
	}
	e.armedAt = p.due
	if e.timer == nil {
		e.timer = e.clock.AfterFunc(d, e.onTimer)
	} else {
		e.timer.Reset(d)
	}
}

// unschedule stops p's timer; e.mu is held.
func (e *Endpoint) unschedule(p *outCon) {
	if p.at > 0 {
		heap.Remove(&e.timers, int(p.at-1))
	}
}

// onTimer runs, on the clock's goroutine, what is due of the CONs'
// timers, one at a time and without e.mu held, then arms the timer for
// the next.
func (e *Endpoint) onTimer() {
	for {
		now := e.clock.Now()
		t := e.since(now)
		e.mu.Lock()
		if len(e.timers) == 0 {
			e.armedAt = notArmed
			e.mu.Unlock()
			return
		}
		p := e.timers[0]
		if p.due > t {
			e.armedAt = p.due
			e.timer.Reset(time.Duration(p.due - t))
			e.mu.Unlock()
			return
		}
		heap.Pop(&e.timers)
		e.mu.Unlock()
		if p.g != nil {
			p.g.onTimer(now, t)
		} else {
			e.retransmit(p)
		}
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
			e.unschedule(p) // an exchange of Go keeps it for its deadline
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
// data is kept for the retransmissions; tok, of at most 8 bytes, is not.
func (e *Endpoint) pendCON(peer netip.AddrPort, mid uint16, tok []byte, data []byte, fin func(*Message, error)) bool {
	p := &outCon{key: exKey{peer, mid}, data: data, timeout: e.cfg.Params.initialTimeout(), fin: fin}
	p.tokLen = uint8(copy(p.tok[:], tok))
	now := e.clock.Now()
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
	e.schedule(p, now, p.timeout)
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
	if int(p.tries) >= e.cfg.Params.MaxRetransmit {
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
	now := e.clock.Now()
	e.schedule(p, now, p.wait(e.since(now)))
	e.mu.Unlock()
	e.stats.retransmissions.Add(1)
	e.write(p.key.peer, p.data)
	return true
}

func (e *Endpoint) cancelCON(k exKey) {
	e.mu.Lock()
	if p, ok := e.pending[k]; ok {
		e.unschedule(p)
		delete(e.pending, k)
	}
	e.mu.Unlock()
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
