package coap

import (
	"context"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sink is a Transport whose peers never speak for themselves: it keeps
// what the endpoint writes, and reads wait for Close. Tests hand the
// endpoint datagrams themselves (Endpoint.receive), from as many peers as
// they like.
type sink struct {
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex
	keep   atomic.Bool
	sent   []sent // guarded by mu
}

type sent struct {
	to  netip.AddrPort
	msg *Message
}

func newSink(keep bool) *sink {
	s := &sink{closed: make(chan struct{})}
	s.keep.Store(keep)
	return s
}

func (s *sink) ReadFrom([]byte) (int, netip.AddrPort, error) {
	<-s.closed
	return 0, netip.AddrPort{}, ErrClosed
}

func (s *sink) WriteTo(_ context.Context, b []byte, to netip.AddrPort) error {
	if !s.keep.Load() {
		return nil
	}
	var m Message
	if err := m.Decode(b); err != nil {
		return err
	}
	s.mu.Lock()
	s.sent = append(s.sent, sent{to, m.Clone()})
	s.mu.Unlock()
	return nil
}

// take returns what was written since the last take.
func (s *sink) take() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}

func (s *sink) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// peerN is the n-th of many distinct peers: 10.x.y.z, port 5683.
func peerN(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 5683)
}

// collector holds the requests it is given, answered through Later,
// until the test answers them: requests in progress at once, as on a
// silent upstream.
type collector struct {
	mu   sync.Mutex
	held []ResponseWriter // guarded by mu
}

func (c *collector) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	return Later(ctx, func() {
		c.mu.Lock()
		c.held = append(c.held, w)
		c.mu.Unlock()
	})
}

// answer answers what the collector holds, and forgets it.
func (c *collector) answer() {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	for _, w := range held {
		w.WriteResponse(&Message{Code: GatewayTimeout})
		Finish(w, nil)
	}
}

// flood has n peers each send a NON GET the handler holds until all have
// come (in progress at once, as on a silent upstream), then answers; and
// has the endpoint send a CON request of its own to each peer (Go), which
// each answers. It returns when all of it is over, and the live heap at
// its height, with everything in flight.
// Nothing is retransmitted or times out: a storm of timers firing at once
// would leave the runtime holding a goroutine for each, which is not the
// endpoint's memory.
func flood(t *testing.T, e *Endpoint, s *sink, h *collector, n int) (height uint64) {
	t.Helper()
	inline := context.WithValue(e.ctx, laterKey{}, &laterState{inline: true})
	var m Message
	for i := range n {
		b := mustMarshal(t, &Message{Type: NonConfirmable, Code: GET, MID: uint16(i), Token: []byte{1, 2, 3, 4}})
		e.receive(inline, &m, b, peerN(i))
	}
	if got := e.Stats().Inflight; got != n {
		t.Fatalf("%d requests in flight, want %d: the flood did not hold its slots", got, n)
	}
	var done atomic.Int64
	for i := range n {
		e.Go(peerN(i), &Message{Code: GET}, time.Minute, func(m *Message, err error) {
			if err == nil && m.Code == Content {
				done.Add(1)
			}
		})
	}
	height = liveHeap()
	h.answer()
	answered := 0
	for _, d := range s.take() {
		switch {
		case d.msg.Type == NonConfirmable && d.msg.Code == GatewayTimeout:
			answered++
		case d.msg.Type == Confirmable && d.msg.Code == GET: // Go's request
			reply := &Message{Type: Acknowledgement, Code: Content, MID: d.msg.MID, Token: d.msg.Token}
			e.receive(inline, &m, mustMarshal(t, reply), d.to)
		}
	}
	if answered != n || done.Load() != int64(n) {
		t.Fatalf("%d requests answered, %d of the endpoint's own answered; want %d each", answered, done.Load(), n)
	}
	s.keep.Store(false)
	if st := e.Stats(); st.Inflight != 0 || st.Retransmissions != 0 {
		t.Fatalf("%d requests in flight, %d retransmissions after the flood", st.Inflight, st.Retransmissions)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.pending) != 0 || len(e.calls) != 0 {
		t.Fatalf("%d CONs pending, %d calls after the flood", len(e.pending), len(e.calls))
	}
	return height
}

// After a flood of exchanges, housekeeping gives the endpoint's memory
// back: the heap returns to where it was before, although the flood's
// peers and exchanges ran into the thousands; the heap of the CONs'
// timers, which held the 20,000 the flood's exchanges had at once, too.
func TestEndpointMemoryReturnsAfterAFlood(t *testing.T) {
	const n = 20000
	h := &collector{}
	s := newSink(true)
	e := NewEndpoint(s, EndpointConfig{
		Handler:              h,
		Inline:               func(*Request) bool { return true },
		MaxInflight:          n,
		MaxInflightPerClient: 1,
		Params:               Params{AckTimeout: time.Minute}, // nothing is retransmitted
	})
	defer e.Close()
	base := liveHeap()
	peak := flood(t, e, s, h, n)
	if peak < base+4<<20 {
		t.Fatalf("live heap %d KiB at the flood's height, %d KiB before: the flood took nothing to give back", peak>>10, base>>10)
	}
	now := time.Now()
	e.housekeep(now)
	e.housekeep(now.Add(e.lifetime)) // message-ID counters: one rotation...
	e.housekeep(now.Add(2 * e.lifetime))
	e.mu.Lock()
	room := cap(e.timers)
	e.mu.Unlock()
	if room >= rebuildAt {
		t.Fatalf("the CONs' timers keep room for %d after the flood", room)
	}
	after := liveHeap()
	t.Logf("live heap: %d KiB before, %d KiB at the flood's height, %d KiB after housekeeping", base>>10, peak>>10, after>>10)
	if after > base+(n*16*2+64<<10) {
		t.Fatalf("live heap %d KiB after housekeeping, %d KiB before the flood (%d KiB at its height)", after>>10, base>>10, peak>>10)
	}
}

// mapOf is the identity of a map's storage: a map made anew has another.
func mapOf(m any) uintptr { return reflect.ValueOf(m).Pointer() }

// A map that held many entries is made anew once it holds few; one that
// never held many, or still holds many, is left alone.
func TestHousekeepingRebuildsMapsAfterAPeak(t *testing.T) {
	e := NewEndpoint(newSink(false), EndpointConfig{})
	defer e.Close()
	fill := func(n int) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for i := range n {
			k := exKey{peerN(i), 1}
			e.pending[k] = &outCon{key: k}
			e.calls[tokKey{peerN(i), 1}] = &call{}
		}
		e.peaks.pending = max(e.peaks.pending, len(e.pending))
		e.peaks.calls = max(e.peaks.calls, len(e.calls))
	}
	drain := func(keep int) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for k := range e.pending {
			if len(e.pending) <= keep {
				break
			}
			delete(e.pending, k)
		}
		for k := range e.calls {
			if len(e.calls) <= keep {
				break
			}
			delete(e.calls, k)
		}
	}
	defer drain(0) // before Close, which would stop the fake CONs' timers
	ids := func() (uintptr, uintptr) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return mapOf(e.pending), mapOf(e.calls)
	}
	for _, tc := range []struct {
		name    string
		peak    int
		keep    int
		rebuilt bool
	}{
		{"a small peak stays", rebuildAt / 2, 0, false},
		{"a large peak still half full stays", 4 * rebuildAt, 2 * rebuildAt, false},
		{"a large peak emptied is rebuilt", 4 * rebuildAt, 0, true},
		{"a large peak down to an eighth is rebuilt", 8 * rebuildAt, rebuildAt, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drain(0)
			e.housekeep(time.Now()) // start from a fresh map and peak
			fill(tc.peak)
			drain(tc.keep)
			p0, c0 := ids()
			e.housekeep(time.Now())
			p1, c1 := ids()
			if (p0 != p1) != tc.rebuilt || (c0 != c1) != tc.rebuilt {
				t.Fatalf("pending rebuilt %v, calls rebuilt %v; want %v", p0 != p1, c0 != c1, tc.rebuilt)
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			if len(e.pending) != tc.keep || len(e.calls) != tc.keep {
				t.Fatalf("%d pending and %d calls after housekeeping, want the %d kept", len(e.pending), len(e.calls), tc.keep)
			}
		})
	}
}

// The §4.5 ring keeps an item for each GET until it expires, although the
// GET was forgotten once answered. Once traffic is light, housekeeping
// keeps only the items that still stand for an exchange, in a buffer
// their size; the exchanges still remembered are still recognised.
func TestHousekeepingCompactsTheDedupRing(t *testing.T) {
	e := NewEndpoint(newSink(false), EndpointConfig{Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.WriteResponse(&Message{Code: Changed})
	}), Inline: func(*Request) bool { return true }})
	defer e.Close()
	inline := context.WithValue(e.ctx, laterKey{}, &laterState{inline: true})
	var m Message
	for i := range 5000 {
		code := GET // forgotten when answered...
		if i%1000 == 0 {
			code = POST // ...but not these five
		}
		e.receive(inline, &m, mustMarshal(t, &Message{Type: NonConfirmable, Code: code, MID: uint16(i)}), peerN(i))
	}
	ring := func() (items, room, remembered int) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.seenQ.len(), len(e.seenQ.buf), len(e.seen)
	}
	if items, room, remembered := ring(); items != 5000 || room < 5000 || remembered != 5 {
		t.Fatalf("ring of %d items in %d, %d remembered: not the flood's", items, room, remembered)
	}
	e.housekeep(time.Now()) // the second of the flood: not quiet
	if items, _, _ := ring(); items != 5000 {
		t.Fatalf("compacted to %d items while 5,000 exchanges had just come", items)
	}
	e.housekeep(time.Now()) // a quiet second
	items, room, remembered := ring()
	if items != 5 || room > 64 || remembered != 5 {
		t.Fatalf("after a quiet second: %d items in room for %d, %d remembered; want 5 in 64", items, room, remembered)
	}
	dups := e.Stats().Duplicates
	for i := 0; i < 5000; i += 1000 {
		e.receive(inline, &m, mustMarshal(t, &Message{Type: NonConfirmable, Code: POST, MID: uint16(i)}), peerN(i))
	}
	if got := e.Stats().Duplicates - dups; got != 5 {
		t.Fatalf("%d of the 5 remembered POSTs recognised as duplicates after compaction", got)
	}
}

// A peer's message-ID counter lives on while IDs go to it, and is
// forgotten once none has for an EXCHANGE_LIFETIME; the counters are
// bounded all along.
func TestMIDCountersAreForgottenAfterAnExchangeLifetime(t *testing.T) {
	e := NewEndpoint(newSink(false), EndpointConfig{})
	defer e.Close()
	counters := func() int {
		e.midMu.Lock()
		defer e.midMu.Unlock()
		return len(e.mids) + len(e.oldMids)
	}
	for i := range 3000 {
		e.allocMID(peerN(i))
	}
	busy, idle := peerN(0), peerN(1)
	start := time.Now()
	first := e.allocMID(busy)
	e.housekeep(start.Add(e.lifetime / 2))
	if counters() != 3000 {
		t.Fatalf("%d counters half an EXCHANGE_LIFETIME on, want 3000", counters())
	}
	e.housekeep(start.Add(e.lifetime + time.Second)) // rotation: all are old now
	if got := e.allocMID(busy); got != first+1 {
		t.Fatalf("the busy peer's next ID after a rotation is %d, want %d: its sequence restarted", got, first+1)
	}
	e.housekeep(start.Add(2*e.lifetime + 2*time.Second)) // the idle ones go
	if n := counters(); n != 1 {
		t.Fatalf("%d counters two EXCHANGE_LIFETIMEs on, want the busy peer's alone", n)
	}
	if got := e.allocMID(busy); got != first+2 {
		t.Fatalf("the busy peer's next ID is %d, want %d", got, first+2)
	}
	e.midMu.Lock()
	_, known := e.mids[idle]
	e.midMu.Unlock()
	if known {
		t.Fatal("an idle peer's counter outlived two rotations")
	}
	// Bounded: more peers than maxMIDPeers within one lifetime.
	for i := range maxMIDPeers + 100 {
		e.allocMID(peerN(10000 + i))
	}
	if n := counters(); n > maxMIDPeers {
		t.Fatalf("%d counters, more than maxMIDPeers %d", n, maxMIDPeers)
	}
}
