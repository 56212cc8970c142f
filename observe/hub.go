package observe

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock"
)

// Timing bounds. They are not configuration: each follows from a spec or
// bounds a wait that must end.
const (
	// livenessMargin is added to the Max-Age of the last notification
	// before the hub assumes the upstream observation is lost and
	// registers again (RFC 7641 §3.3.1: a client re-registers when Max-Age
	// runs out without a notification).
	livenessMargin = 5 * time.Second
	// cancelTimeout bounds one upstream cancellation (Observe=1 exchange).
	cancelTimeout = 10 * time.Second
	// closeCancelTimeout bounds the cancellations Close waits for.
	closeCancelTimeout = 2 * time.Second
	// protectedIdle is how long a protected observation may go without a
	// notification before the hub ends it (protectedLiveness).
	protectedIdle = 24 * time.Hour
	// reregisterTimeout bounds a liveness re-registration through next.
	reregisterTimeout = time.Minute
	// defaultMaxAge is Max-Age's default (RFC 7252 §5.10.5).
	defaultMaxAge = 60
)

// Option configures a Hub.
type Option func(*Hub)

// WithClock replaces the system clock (tests).
func WithClock(c Clock) Option { return func(h *Hub) { h.clock = c } }

// WithLogger sets the hub's logger.
func WithLogger(l *slog.Logger) Option { return func(h *Hub) { h.log = l } }

// WithKey replaces DefaultKey. Requests with the same key share one
// upstream observation; ok false gives the observer a registration of its
// own. The proxy plugs in the cache's key so that the two agree.
func WithKey(f func(r *coap.Request) (string, bool)) Option {
	return func(h *Hub) { h.key = f }
}

// WithOnNotify sets a hook that sees every accepted upstream notification
// of a shared observation, as the origin sent it, with the key of the
// observation: the cache stores it (RFC 7641 §4.3: a notification updates
// the stored response). It runs on a transport's reader goroutine, with
// the hub's lock held and before any observer is told (so an observer
// fetching the rest of a block-wise notification finds the cache already
// on it): it must not block nor call back into the hub. n is shared with the observers' slots: it may be kept but
// never changed.
func WithOnNotify(f func(key string, n *coap.Message)) Option {
	return func(h *Hub) { h.onNotify = f }
}

// WithClientLimit replaces MaxPerClient for the addresses limit knows:
// it returns the bound for a, or ok false for MaxPerClient. The proxy
// gives its plugins' addresses their own bound (a bridge that observes a
// hundred resources is one client of the hub, and a trusted one);
// MaxObservers still bounds everyone together.
func WithClientLimit(limit func(a netip.Addr) (n int, ok bool)) Option {
	return func(h *Hub) { h.clientLimit = limit }
}

// WithWorkers sets the number of delivery goroutines (default: GOMAXPROCS,
// at least 2, at most 8).
func WithWorkers(n int) Option { return func(h *Hub) { h.workers = n } }

// Stats are the hub's counters.
type Stats struct {
	Observers        int    // observers registered now
	Upstreams        int    // upstream observations now (registering or active)
	NotificationsIn  uint64 // upstream notifications received
	NotificationsOut uint64 // notifications sent to observers
	DroppedStale     uint64 // upstream notifications out of sequence (PR4.1, RFC 7641 §3.4)
	Deregistrations  uint64 // observers removed by Observe=1, RST, CON timeout or ICMP
	Rejected         uint64 // of those, by an RST to a notification (RFC 7641 §3.6)
	Unconfirmed      uint64 // of those, by a CON notification that timed out (§4.5)
	Unreachable      uint64 // of those, by the network reporting the observer unreachable (ICMP)
	Skipped          uint64 // states an observer never saw because a newer one replaced it in its slot
	OverLimit        uint64 // registrations served without Observe because of MaxObservers or MaxPerClient
	ProtectedExpired uint64 // protected observations ended after a day without a notification
}

type counters struct {
	in, out, stale, dereg, skipped, overLimit, protExpired atomic.Uint64
	rejected, unconfirmed, unreachable                     atomic.Uint64
}

// Hub is the proxy's Observe hub (RFC 7641 §5): one upstream observation
// per key, any number of downstream observers, each with a latest-wins
// slot drained by a small pool of workers.
type Hub struct {
	cfg         Config
	clock       Clock
	log         *slog.Logger
	key         func(*coap.Request) (string, bool)
	onNotify    func(string, *coap.Message)
	clientLimit func(netip.Addr) (int, bool) // WithClientLimit
	workers     int
	allCON      bool

	ctx       context.Context // ended by Close: re-registrations
	stop      context.CancelFunc
	wg        sync.WaitGroup // workers, cancellations, re-registrations
	closeOnce sync.Once

	// seqBase advances with every notification sent; a new observer's
	// numbers start there, so an observer that comes back with the same
	// token never sees its numbers go backwards (RFC 7641 §4.4).
	seqBase atomic.Uint32
	st      counters

	mu        sync.Mutex
	cond      *sync.Cond          // on mu: workers wait for ready observers
	closed    bool                // guarded by mu
	entries   map[entryKey]*entry // guarded by mu: observations by key
	observers observerSet         // guarded by mu: observers by peer and token
	perClient map[netip.Addr]int  // guarded by mu: observers and waiters per client address
	count     int                 // guarded by mu: observers and waiters in all
	ready     []*observer         // guarded by mu: FIFO of observers with a dirty slot
	// connStops are the observers over stream connections (RFC 8323),
	// each with what stops the hook that removes it when its connection
	// closes (§7.4); guarded by mu.
	connStops map[*observer]func() bool
}

// New returns a running hub. cfg should be validated; zero fields get
// their defaults. Close stops it.
func New(cfg Config, opts ...Option) *Hub {
	h := &Hub{
		cfg:       cfg.withDefaults(),
		clock:     clock.System,
		key:       DefaultKey,
		entries:   make(map[entryKey]*entry),
		observers: newObserverSet(),
		perClient: make(map[netip.Addr]int),
	}
	for _, o := range opts {
		o(h)
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.clock == nil {
		h.clock = clock.System
	}
	if h.key == nil {
		h.key = DefaultKey
	}
	if h.workers <= 0 {
		h.workers = min(max(runtime.GOMAXPROCS(0), 2), 8)
	}
	h.allCON = h.cfg.NotifyType == NotifyCON
	h.cond = sync.NewCond(&h.mu)
	h.ctx, h.stop = context.WithCancel(context.Background())
	h.seqBase.Store(uint32(h.clock.Now().UnixNano()>>20) & seqMask)
	for range h.workers {
		h.wg.Add(1)
		go h.work()
	}
	return h
}

// Stats returns a snapshot of the counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	s := Stats{Observers: h.observers.len(), Upstreams: len(h.entries)}
	h.mu.Unlock()
	s.NotificationsIn = h.st.in.Load()
	s.NotificationsOut = h.st.out.Load()
	s.DroppedStale = h.st.stale.Load()
	s.Deregistrations = h.st.dereg.Load()
	s.Rejected = h.st.rejected.Load()
	s.Unconfirmed = h.st.unconfirmed.Load()
	s.Unreachable = h.st.unreachable.Load()
	s.Skipped = h.st.skipped.Load()
	s.OverLimit = h.st.overLimit.Load()
	s.ProtectedExpired = h.st.protExpired.Load()
	return s
}

// Close cancels every upstream observation, stops the workers and waits
// for them and for the cancellations. Observers are forgotten: their next
// notification never comes, and they re-register when Max-Age runs out
// (RFC 7641 §3.3.1). Idempotent.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		var cancels []func(context.Context) error
		for _, e := range h.entries {
			e.state = stateEnded
			if e.live != nil {
				e.live.Stop()
			}
			if e.reg != nil {
				if f := e.reg.takeCancelLocked(); f != nil {
					cancels = append(cancels, f)
				}
			}
		}
		clear(h.entries)
		h.observers.clear()
		clear(h.perClient)
		h.count = 0
		clear(h.ready)
		h.ready = nil
		h.cond.Broadcast()
		h.mu.Unlock()
		h.stop()
		for _, f := range cancels {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.runCancel(f, closeCancelTimeout)
			}()
		}
		h.wg.Wait()
	})
	return nil
}

func (h *Hub) runCancel(f func(context.Context) error, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := f(ctx); err != nil && !errors.Is(err, coap.ErrClosed) {
		h.log.Debug("upstream cancel failed", "err", err)
	}
}

// cancelLocked ends an upstream registration off the caller's goroutine
// (which may be a transport reader): RFC 7641 §3.6 through the cancel
// function the route stage handed over with Started.
func (h *Hub) cancelLocked(g *registration) {
	g.dead = true
	f := g.takeCancelLocked()
	if f == nil {
		return
	}
	if h.closed {
		// Close has taken every cancel it could see; one that arrives
		// later (Started after Close) is run here, briefly.
		go h.runCancel(f, closeCancelTimeout)
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.runCancel(f, cancelTimeout)
	}()
}

type entryState uint8

const (
	stateRegistering entryState = iota // the first registration is in next
	stateActive                        // a representation is known
	stateEnded                         // removed from the hub
)

// entry is one upstream observation and its observers.
type entry struct {
	h         *Hub
	key       entryKey
	protected bool          // OSCORE: one observer, notifications relayed as they come
	next      coap.Handler  // where registrations go
	req       *coap.Request // the registration, for re-registration; nil if protected
	name      string        // the resource, for Observations
	state     entryState
	waiters   []*waiter     // registering: requests waiting for the first response
	leader    *waiter       // registering: the waiter whose request is in next
	obs       []*observer   // active: observers, each knowing its index
	reg       *registration // the current upstream registration
	last      *coap.Message // the freshest representation, as the origin sent it
	lastAt    time.Time     // when last arrived
	lastSeq   uint32        // its Observe value
	haveSeq   bool          // lastSeq is meaningful
	live      Timer         // re-registers when Max-Age runs out (protected: ends after a day)
	rereg     bool          // a re-registration is in next
}

// observer is one downstream observation. The hub keeps one per
// observer, so it is kept small (96 bytes on 64-bit platforms, see
// TestObserverSize). Its latest-wins slot is a flag: a notification makes
// the new state the entry's (e.last, arrived at e.lastAt) and marks every
// observer's slot dirty, so a dirty slot always holds e.last and needs no
// pointer of its own.
type observer struct {
	e         *entry
	w         coap.NotifyWriter
	nextInSet *observer // in h.observers, with an ID of the same hash
	id        obsID
	lastCON   int64  // UnixNano of the last confirmable notification (or registration)
	idx       int32  // in e.obs (max_observers is at most 2^20)
	seq       uint32 // the last Observe number given to this observer
	sinceCON  uint16 // notifications since the last confirmable one (CONEvery)
	dirty     bool   // latest-wins slot: e.last is not yet sent
	final     bool   // the slot's state ends the observation
	started   bool   // the first response is out: notifications may follow
	queued    bool   // in the ready queue
	busy      bool   // a worker sends to it, or a CON awaits its ACK
	gone      bool
}

// waiter is a registration waiting for the first response.
type waiter struct {
	id   obsID
	w    coap.NotifyWriter
	done chan struct{} // closed when resp or err is set
	resp *coap.Message
	err  error
	obs  *observer // set when the waiter became an observer
}

// registration is one upstream observation as the stages after the hub
// see it: the coap.Observer they report to (Request.Observer).
type registration struct {
	h       *Hub
	e       *entry
	cancel  func(context.Context) error // guarded by h.mu
	done    bool                        // guarded by h.mu: the first response was handled
	dead    bool                        // guarded by h.mu: superseded or ended
	early   *coap.Message               // guarded by h.mu: a notification that beat the first response
	earlyAt time.Time                   // guarded by h.mu
}

var _ coap.Observer = (*registration)(nil)

func (g *registration) takeCancelLocked() func(context.Context) error {
	f := g.cancel
	g.cancel = nil
	g.dead = true
	return f
}

// Started keeps the cancel function; a registration that is already dead
// is cancelled at once.
func (g *registration) Started(cancel func(context.Context) error) {
	if cancel == nil {
		return
	}
	h := g.h
	h.mu.Lock()
	defer h.mu.Unlock()
	g.cancel = cancel
	if g.dead {
		h.cancelLocked(g)
	}
}

// Notify takes a notification from the origin. It runs on the transport's
// reader goroutine: it checks the order, stores into the observers' slots
// and signals the workers; it never waits for a client.
func (g *registration) Notify(n *coap.Message) {
	if n == nil {
		return
	}
	h := g.h
	h.st.in.Add(1)
	n = n.Clone() // the caller's buffer may be reused
	now := h.clock.Now()
	h.mu.Lock()
	if g.dead || h.closed {
		h.mu.Unlock()
		return
	}
	if !g.done {
		// Before the first response: keep the freshest for later.
		if v2, ok := n.Options.Uint(coap.Observe); ok && g.early != nil {
			if v1, ok := g.early.Options.Uint(coap.Observe); ok && !fresher(v1, g.earlyAt, v2, now) {
				h.st.stale.Add(1)
				h.mu.Unlock()
				return
			}
		}
		g.early, g.earlyAt = n, now
		h.mu.Unlock()
		return
	}
	h.notifyLocked(g.e, n, now, false)
	h.mu.Unlock()
}

// notifyLocked makes n the entry's state and fills every observer's slot.
// With reset, the order check is skipped: n is the first response of a
// new registration, whose numbers start afresh.
func (h *Hub) notifyLocked(e *entry, n *coap.Message, now time.Time, reset bool) {
	if e.state != stateActive {
		return
	}
	v2, has := n.Options.Uint(coap.Observe)
	if has && e.haveSeq && !reset && !fresher(e.lastSeq, e.lastAt, v2, now) {
		// PR4.1: out of sequence, discarded.
		h.st.stale.Add(1)
		return
	}
	// RFC 7641 §3.2, §4.2: a notification that is not 2.xx, or that has
	// no Observe option, ends the observation.
	final := !has || n.Code.Class() != 2
	if !final && h.onNotify != nil && !e.protected {
		// Before any observer is signalled: one that goes on to fetch the
		// rest of a block-wise representation (RFC 7959 §3) must find the
		// cache already holding the new one, never the old one's blocks.
		h.onNotify(e.key.k, n)
	}
	e.last, e.lastAt = n, now
	e.lastSeq, e.haveSeq = v2, has
	for _, o := range e.obs {
		if o.dirty {
			h.st.skipped.Add(1)
		}
		o.dirty, o.final = true, final
		h.readyLocked(o)
	}
	if final {
		h.endLocked(e)
		return
	}
	h.armLocked(e, n, now)
}

// armLocked (re)starts the liveness timer: when Max-Age runs out plus a
// margin without a newer notification, the observation is registered
// again (RFC 7641 §3.3.1, §4.3.1). A protected observation is ended
// instead, after a day (protectedLiveness): an OSCORE-aware intermediary
// shall not initiate registrations (RFC 8613 §4.1.3.5.1), and without the
// timer the state of one whose origin and client have both gone would
// stay until Close.
func (h *Hub) armLocked(e *entry, n *coap.Message, now time.Time) {
	if e.live != nil {
		e.live.Stop()
		e.live = nil
	}
	switch {
	case e.protected:
		e.live = h.clock.AfterFunc(protectedLiveness(n), func() { h.expireProtected(e) })
	case e.req != nil:
		age := time.Duration(maxAge(n))*time.Second + livenessMargin
		g := e.reg
		e.live = h.clock.AfterFunc(age, func() { h.expire(e, g) })
	}
}

// errorResponse is what observers get when a registration ends without a
// response.
func errorResponse(err error) *coap.Message {
	var ce *coap.Error
	if errors.As(err, &ce) {
		return ce.Response()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, coap.ErrTimeout) {
		return &coap.Message{Code: coap.GatewayTimeout}
	}
	return &coap.Message{Code: coap.BadGateway}
}

// endLocked removes e from the hub and cancels its upstream observation.
// Observers with a final notification in their slot stay until it is
// sent; the others go now.
func (h *Hub) endLocked(e *entry) {
	if e.state == stateEnded {
		return
	}
	e.state = stateEnded
	if h.entries[e.key] == e {
		delete(h.entries, e.key)
	}
	if e.live != nil {
		e.live.Stop()
		e.live = nil
	}
	if e.reg != nil {
		h.cancelLocked(e.reg)
	}
	for i := len(e.obs) - 1; i >= 0; i-- {
		if o := e.obs[i]; !o.final {
			h.removeLocked(o)
		}
	}
}

// removeLocked forgets an observer; the last one to leave an entry ends
// it and cancels the upstream observation.
func (h *Hub) removeLocked(o *observer) {
	if o.gone {
		return
	}
	o.gone = true
	o.dirty = false
	if stop, ok := h.connStops[o]; ok {
		delete(h.connStops, o)
		stop()
	}
	h.observers.del(o)
	h.releaseLocked(o.id.addr)
	e := o.e
	if int(o.idx) < len(e.obs) && e.obs[o.idx] == o {
		last := len(e.obs) - 1
		e.obs[o.idx] = e.obs[last]
		e.obs[o.idx].idx = o.idx
		e.obs[last] = nil
		e.obs = e.obs[:last]
	}
	if len(e.obs) == 0 && e.state == stateActive {
		h.endLocked(e)
	}
}

func (h *Hub) reserveLocked(a netip.Addr) bool {
	limit := h.cfg.MaxPerClient
	if h.clientLimit != nil {
		if n, ok := h.clientLimit(a); ok {
			limit = n
		}
	}
	if h.count >= h.cfg.MaxObservers || h.perClient[a] >= limit {
		return false
	}
	h.count++
	h.perClient[a]++
	return true
}

func (h *Hub) releaseLocked(a netip.Addr) {
	if h.closed {
		return
	}
	h.count--
	if n := h.perClient[a] - 1; n > 0 {
		h.perClient[a] = n
	} else {
		delete(h.perClient, a)
	}
}

// addLocked makes a waiter's reservation an observer of e.
func (h *Hub) addLocked(e *entry, id obsID, w coap.NotifyWriter, now time.Time) *observer {
	o := &observer{id: id, e: e, w: w, idx: int32(len(e.obs)), lastCON: now.UnixNano()}
	o.seq = h.seqBase.Load() & seqMask
	// The observers of a resource take their CONs in turn, not all on
	// the same notification: a fan-out to thousands then holds a
	// CONEvery-th of them in retransmission state at a time, not all.
	o.sinceCON = uint16(int(o.idx) % h.cfg.CONEvery)
	e.obs = append(e.obs, o)
	if old := h.observers.get(id); old != nil {
		// §4.1: the same client and token replace an entry, never add a
		// second one. The reservation of the old one is released. The new
		// observer is in the entry first, so that replacing the only
		// observer of an entry does not end the entry's observation.
		h.removeLocked(old)
	}
	h.observers.put(o)
	if sw, ok := w.(coap.StreamWriter); ok {
		// RFC 8323 §7.4: the observers of a connection go with it, not at
		// their next notification.
		if h.connStops == nil {
			h.connStops = make(map[*observer]func() bool)
		}
		h.connStops[o] = context.AfterFunc(sw.Context(), func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if !o.gone {
				h.st.dereg.Add(1)
				h.removeLocked(o)
			}
		})
	}
	return o
}

// startLocked lets notifications flow to an observer whose first response
// is out.
func (h *Hub) startLocked(o *observer) {
	o.started = true
	h.readyLocked(o)
}

func (h *Hub) readyLocked(o *observer) {
	if !o.started || o.busy || o.queued || o.gone || !o.dirty || h.closed {
		return
	}
	o.queued = true
	h.ready = append(h.ready, o)
	h.cond.Signal()
}
