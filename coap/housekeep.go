package coap

import (
	"maps"
	"time"
)

// Memory after a peak. A flood of exchanges grows the endpoint's maps and
// the ring of §4.5, and Go maps keep the room of the most entries they
// ever held: without housekeeping, a flood's peak would stay in memory
// for as long as the endpoint runs. Once a second the endpoint gives back
// what a peak left behind.

// housekeepEvery is how often housekeep runs (from ackLoop).
const housekeepEvery = time.Second

// peaks are the most entries each map of the endpoint held since it was
// made.
type peaks struct{ seen, pending, calls int }

// housekeep forgets the §4.5 exchanges that have expired, compacts the
// ring of remembered exchanges once traffic is light, makes a map anew
// that holds a fraction of its peak, and forgets the message-ID counters
// of peers no ID went to for an EXCHANGE_LIFETIME (rotateMIDs). Under
// steady traffic it finds nothing to do.
func (e *Endpoint) housekeep(now time.Time) {
	e.mu.Lock()
	e.expireSeen(int64(now.Sub(e.start)), e.cfg.DedupLimit+1)
	// Compacting is a pass over the ring, so it waits for a second with
	// few new exchanges; a busy endpoint's ring is bounded by DedupLimit.
	if e.pushes <= e.seenQ.len()/16 {
		e.compactSeen()
	}
	e.pushes = 0
	e.seen = rebuilt(e.seen, &e.peaks.seen)
	e.pending = rebuilt(e.pending, &e.peaks.pending)
	e.calls = rebuilt(e.calls, &e.peaks.calls)
	if cap(e.timers) >= rebuildAt && len(e.timers) <= cap(e.timers)/8 {
		// The CONs' timers (reliability.go) likewise: their heap keeps
		// the room of the most CONs it held at once.
		e.timers = append(make(conTimers, 0, 2*len(e.timers)), e.timers...)
	}
	e.mu.Unlock()
	e.rotateMIDs(now)
}

// compactSeen rebuilds the ring with its live items alone (e.live), in a
// buffer twice their number: a GET or FETCH is forgotten once answered
// (§4.5 lets idempotent requests be served again), but its item stays in
// the ring until it expires, an EXCHANGE_LIFETIME later. e.mu is held.
func (e *Endpoint) compactSeen() {
	q := &e.seenQ
	const least = 64
	// There are at most len(e.seen) live items: a cheap test first.
	if len(q.buf) <= max(least, 2*len(e.seen)) {
		return
	}
	live := 0
	for i := range q.n {
		if e.live(q.at(i)) {
			live++
		}
	}
	buf := make([]seenItem, max(least, 2*live))
	j := 0
	for i := range q.n {
		if it := q.at(i); e.live(it) {
			buf[j] = it
			j++
		}
	}
	q.buf, q.head, q.n = buf, 0, j
}

// rebuilt returns m, or, once m holds an eighth of its peak or less and
// the peak was rebuildAt entries or more, a copy with only the room its
// entries need; peak then starts again from there.
func rebuilt[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if *peak < rebuildAt || len(m) > *peak/8 {
		return m
	}
	n := make(map[K]V, len(m))
	maps.Copy(n, m)
	*peak = len(n)
	return n
}
