package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Bounds of request coalescing: at most maxFlights distinct keys have an
// upstream request others wait for, and at most maxWaiters wait for each.
// A request beyond either goes upstream on its own.
const (
	maxFlights = 1024
	maxWaiters = 256
	// maxUnshared bounds the keys remembered as answered uncacheably;
	// past it the memory starts afresh.
	maxUnshared = 4096
)

// Cache is the response cache and its chain stage. It is safe for
// concurrent use.
type Cache struct {
	cfg Config
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	entries map[[sha256.Size]byte]*entry // guarded by mu: by Key.ID
	byURI   map[[sha256.Size]byte]*entry // guarded by mu: heads of the same-URI lists, by Key.URI
	reps    map[[sha256.Size]byte]*rep   // guarded by mu: the representations' blocks, by Key.Rep
	lru     entry                        // guarded by mu: sentinel of the recency list
	bytes   int64                        // guarded by mu: accounted size of all entries
	flights map[flightKey]*flight        // guarded by mu: upstream requests others wait for
	// unshared holds the keys (Key.ID) whose last forwarded response could
	// not be stored: identical requests for them are not coalesced, since
	// a waiter would only learn there is nothing to share and then go
	// upstream itself, a whole exchange late. Guarded by mu.
	unshared map[[sha256.Size]byte]struct{}

	stats counters
}

type counters struct {
	hits, misses, revalidations, evictions, expired, coalesced, stored, invalidated, superseded atomic.Uint64
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Hits          uint64 // requests answered from a fresh entry, 2.03 to a client's ETag included (PR3.1, PR3.3)
	Misses        uint64 // cacheable requests that found no usable fresh entry and went upstream
	Revalidations uint64 // stale entries the cache validated upstream with their stored ETag (§5.6.2)
	Evictions     uint64 // entries dropped to stay within max_bytes
	Expired       uint64 // stale entries without an ETag dropped when found
	Coalesced     uint64 // requests answered by an identical concurrent request's upstream exchange
	Stored        uint64 // responses stored or refreshed
	Invalidated   uint64 // entries dropped because an unsafe request to their URI succeeded
	Superseded    uint64 // 2.05 entries (blocks) dropped because another representation of their resource came (RFC 7959 §2.10)
	Bytes         int64  // accounted size of the entries now
	Entries       int    // entries now
}

// Option configures New.
type Option func(*Cache)

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option {
	return func(c *Cache) {
		if now != nil {
			c.now = now
		}
	}
}

// WithLogger sets the component logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *Cache) {
		if l != nil {
			c.log = l
		}
	}
}

// New returns an empty cache. cfg should be validated; zero fields take
// their defaults.
func New(cfg Config, opts ...Option) *Cache {
	c := &Cache{
		cfg:      cfg.withDefaults(),
		now:      time.Now,
		log:      slog.New(slog.DiscardHandler),
		entries:  map[[sha256.Size]byte]*entry{},
		byURI:    map[[sha256.Size]byte]*entry{},
		reps:     map[[sha256.Size]byte]*rep{},
		flights:  map[flightKey]*flight{},
		unshared: map[[sha256.Size]byte]struct{}{},
	}
	c.lru.prev, c.lru.next = &c.lru, &c.lru
	for _, o := range opts {
		o(c)
	}
	return c
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	b, n := c.bytes, len(c.entries)
	c.mu.Unlock()
	return Stats{
		Hits:          c.stats.hits.Load(),
		Misses:        c.stats.misses.Load(),
		Revalidations: c.stats.revalidations.Load(),
		Evictions:     c.stats.evictions.Load(),
		Expired:       c.stats.expired.Load(),
		Coalesced:     c.stats.coalesced.Load(),
		Stored:        c.stats.stored.Load(),
		Invalidated:   c.stats.invalidated.Load(),
		Superseded:    c.stats.superseded.Load(),
		Bytes:         b,
		Entries:       n,
	}
}

// KeyOf returns the cache key of a request, false when responses to it
// are never stored (see Stage). For the Observe hub, which stores
// notifications with Store.
func KeyOf(req *coap.Request) (Key, bool) {
	k, ok := encodeKey(req)
	if !ok {
		return Key{}, false
	}
	defer k.release()
	return k.key(), true
}

// Store stores a response under key if it is cacheable (2.05, or an error
// with Max-Age; Max-Age not 0; not over max_entry_bytes), replacing the
// entry there (PR3.2). It reports whether the response was stored. The
// cache keeps a copy. A 2.05, stored or not, drops the stored blocks of
// the other representations of its resource (key.Rep, RFC 7959 §2.10): a
// notification carrying a new first block ends the old one's other blocks.
func (c *Cache) Store(key Key, resp *coap.Message) bool {
	if resp == nil {
		return false
	}
	maxAge, ok := c.cacheable(resp)
	if !ok {
		if key.Rep == ([sha256.Size]byte{}) {
			key.Rep = key.ID
		}
		c.mu.Lock()
		c.learnFrom(key.Rep, resp)
		c.mu.Unlock()
		return false
	}
	m := resp.Clone()
	m.Token, m.MID, m.Type = nil, 0, 0
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.put(key, m, maxAge, noHop, now)
}

// Invalidate drops every entry whose effective request URI is key's.
func (c *Cache) Invalidate(key Key) {
	c.mu.Lock()
	c.invalidate(key.URI)
	c.mu.Unlock()
}

// cacheable reports whether a response may be stored, and for how long:
// 2.05 Content (§5.9.1.5) and, with an explicit Max-Age, the 4.xx and
// 5.xx error responses (§5.9.2, §5.9.3). An error without Max-Age is not
// stored: the 60 s default would keep a transient failure for a minute.
// 2.03 is validation, not a representation; other success codes are never
// stored.
func (c *Cache) cacheable(resp *coap.Message) (time.Duration, bool) {
	switch class := resp.Code.Class(); {
	case resp.Code == coap.Content:
	case class == 4 || class == 5:
		if !resp.Options.Has(coap.MaxAge) {
			return 0, false
		}
	default:
		return 0, false
	}
	return c.maxAge(resp)
}

// maxAge reads Max-Age (§5.10.5), or the default; 0 and unreadable values
// are not cacheable.
func (c *Cache) maxAge(m *coap.Message) (time.Duration, bool) {
	if count(m.Options, coap.MaxAge) > 1 {
		return 0, false
	}
	v, ok := m.Options.Get(coap.MaxAge)
	if !ok {
		return c.cfg.DefaultMaxAge, true
	}
	if len(v) > 4 {
		return 0, false
	}
	s := coap.DecodeUint(v)
	if s == 0 {
		return 0, false
	}
	return time.Duration(s) * time.Second, true
}

// Stage is the cache as a chain stage. Requests with OSCORE and without
// Request-Hash, and methods it does not know, pass through untouched. GET
// and FETCH are answered from a fresh entry or forwarded to next, whose
// response is stored if cacheable and then written to the client. A 2.xx
// to POST, PUT, DELETE, PATCH or iPATCH drops the entries of the URI.
//
// next answers before it returns, or later (coap.ErrLater): then the
// response is stored and written when it comes, and the stage returns
// ErrLater too. The message a hit hands to w shares option values and
// payload with the store: w must not modify it.
func (c *Cache) Stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		m := r.Msg
		if m == nil || m.Options.Has(coap.OSCORE) && !m.Options.Has(coap.RequestHash) {
			// RFC 8613 §10: ordinary OSCORE responses are not cached,
			// and nothing about the request is touched.
			return next.ServeCoAP(ctx, w, r)
		}
		switch m.Code {
		case coap.GET, coap.FETCH:
			return c.serveSafe(ctx, next, w, r)
		case coap.POST, coap.PUT, coap.DELETE, coap.PATCH, coap.IPATCH:
			if m.Options.Has(coap.OSCORE) {
				return next.ServeCoAP(ctx, w, r)
			}
			return c.serveUnsafe(ctx, next, w, r)
		}
		return next.ServeCoAP(ctx, w, r)
	})
}

// serveUnsafe forwards and, when the request succeeds, drops the entries
// of its URI before the client sees the answer (§5.9.1.1, §5.9.1.2,
// §5.9.1.4: stored responses for a changed resource are no longer fresh).
func (c *Cache) serveUnsafe(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request) error {
	k, ok := encodeURI(r.Msg)
	if !ok {
		return next.ServeCoAP(ctx, w, r)
	}
	uri := k.uri()
	k.release()
	return next.ServeCoAP(ctx, coap.WrapWriter(w, &invalidator{c: c, uri: uri}), r)
}

// invalidator is serveUnsafe's part of the writer it hands on: a success
// drops the entries of the URI before it goes to the client.
type invalidator struct {
	coap.PassFinish
	c   *Cache
	uri [sha256.Size]byte
}

var _ coap.Wrapper = (*invalidator)(nil)

func (v *invalidator) Write(next coap.Next, resp *coap.Message) error {
	if resp != nil && resp.Code.Class() == 2 && resp.Code != coap.Continue {
		v.c.Invalidate(Key{URI: v.uri})
	}
	return next.Write(resp)
}

// serveSafe handles GET and FETCH.
func (c *Cache) serveSafe(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request) error {
	k, ok := encodeKey(r)
	if !ok {
		return next.ServeCoAP(ctx, w, r)
	}
	err := c.serveKeyed(ctx, next, w, r, &k)
	if !errors.Is(err, coap.ErrLater) {
		k.release() // else the answer's continuation releases it
	}
	return err
}

// serveKeyed is serveSafe for a request with its key.
func (c *Cache) serveKeyed(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request, k *reqKey) error {
	m := r.Msg
	id := k.id()
	hop := hopLimit(m)
	if m.Options.Has(coap.Observe) {
		// A registration must reach the server (or the Observe hub,
		// which sits before this stage): a stored response would leave
		// the client believing it observes. Its response is stored.
		c.stats.misses.Add(1)
		return c.forward(ctx, next, w, r, k.onHeap(), id, hop, snapshot{}, false)
	}
	now := c.now()
	e, found := c.lookup(m, k, id, hop, now)
	if found && e.fresh(now) {
		switch {
		case !m.Options.Has(coap.ETag):
			c.stats.hits.Add(1) // PR3.1
			return w.WriteResponse(answer(&e, now))
		case e.etag != nil && hasETag(m, e.etag):
			c.stats.hits.Add(1) // PR3.3
			return w.WriteResponse(valid(&e, now))
		}
		// PR3.3: an ETag that is not the fresh one: forwarded.
	}
	c.stats.misses.Add(1)
	return c.coalesce(ctx, next, w, r, k.onHeap(), id, hop, e, found)
}

// lookup finds the entry for a request: its own key, or (PR3.5) the entry
// of the same request without Accept when that is a fresh 2.05 whose
// Content-Format is the one accepted. A stored 5.08 is only usable for a
// Hop-Limit no larger than the one that obtained it (RFC 8768 §3).
func (c *Cache) lookup(m *coap.Message, k *reqKey, id [sha256.Size]byte, hop int, now time.Time) (snapshot, bool) {
	c.mu.Lock()
	e, found := c.get(id, now)
	c.mu.Unlock()
	if found && e.resp.Code == coap.HopLimitReached && hop > e.hop {
		return snapshot{}, false
	}
	if found && e.fresh(now) || k.accepts != 1 {
		return e, found
	}
	accept, ok := m.Options.Uint(coap.Accept)
	if !ok {
		return e, found
	}
	alt := k.withoutAccept()
	c.mu.Lock()
	a, ok := c.get(alt, now)
	c.mu.Unlock()
	if ok && a.fresh(now) && a.resp.Code == coap.Content && a.cf == int64(accept) &&
		!m.Options.Has(coap.Block2) && !a.resp.Options.Has(coap.Block2) {
		// Not for a block: the other blocks would come from this
		// request's own entries, which are another representation's
		// list (Key.Rep includes Accept), and could be of another
		// representation (RFC 7959 §2.4).
		return a, true
	}
	return e, found
}

// flightKey names a flight. The Hop-Limit is part of it: a request that
// comes back around a forwarding loop with a lower Hop-Limit must not wait
// for itself; it goes on until the loop ends in 5.08 (RFC 8768 §3).
type flightKey struct {
	id  [sha256.Size]byte
	hop int
}

// flight is one upstream request identical concurrent requests wait for.
type flight struct {
	landed  atomic.Bool // done is closed, once
	done    chan struct{}
	waiters int           // guarded by Cache.mu
	resp    *coap.Message // set before done closes: a response waiters may share; nil if none
	err     error         // set before done closes: the leader got no response
}

// coalesce makes the first of identical concurrent misses the leader that
// goes upstream; the others wait for it, then answer from the entry it
// stored, or share its response, or its error.
func (c *Cache) coalesce(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request, k *reqKey, id [sha256.Size]byte, hop int, e snapshot, found bool) error {
	fk := flightKey{id, hop}
	c.mu.Lock()
	f := c.flights[fk]
	_, unshared := c.unshared[id]
	switch {
	case unshared:
		c.mu.Unlock()
		return c.forward(ctx, next, w, r, k, id, hop, e, found)
	case f == nil && len(c.flights) < maxFlights:
		f = &flight{done: make(chan struct{})}
		c.flights[fk] = f
		c.mu.Unlock()
		land := func(shared *coap.Message, err error) {
			if !f.landed.CompareAndSwap(false, true) {
				return
			}
			c.mu.Lock()
			delete(c.flights, fk)
			c.mu.Unlock()
			f.resp, f.err = shared, err
			if shared == nil && err == nil {
				f.err = errNoShare
			}
			close(f.done)
		}
		returned := false
		defer func() {
			if !returned {
				land(nil, nil) // next panicked: release the waiters all the same
			}
		}()
		err := c.forwardShared(ctx, next, w, r, k, id, hop, e, found, land)
		returned = true
		return err
	case f != nil && f.waiters < maxWaiters:
		f.waiters++
		c.mu.Unlock()
		if coap.Inline(ctx) {
			// On an endpoint's reader: wait on a goroutine of its own.
			dctx := coap.Detached(ctx)
			return coap.Later(ctx, func() {
				go func() {
					coap.Finish(w, c.await(dctx, next, w, r, k, id, hop, f))
					k.release()
				}()
			})
		}
		return c.await(ctx, next, w, r, k, id, hop, f)
	default:
		c.mu.Unlock()
		return c.forward(ctx, next, w, r, k, id, hop, e, found)
	}
}

// await waits for another request's flight and answers from what it got.
func (c *Cache) await(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request, k *reqKey, id [sha256.Size]byte, hop int, f *flight) error {
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	now := c.now()
	if e, ok := c.lookup(r.Msg, k, id, hop, now); ok && e.fresh(now) {
		if !r.Msg.Options.Has(coap.ETag) {
			c.stats.coalesced.Add(1)
			return w.WriteResponse(answer(&e, now))
		}
		if e.etag != nil && hasETag(r.Msg, e.etag) {
			c.stats.coalesced.Add(1)
			return w.WriteResponse(valid(&e, now))
		}
	}
	switch {
	case f.resp != nil && !r.Msg.Options.Has(coap.ETag):
		c.stats.coalesced.Add(1)
		return w.WriteResponse(f.resp.Clone())
	case f.err != nil && !errors.Is(f.err, errNoShare):
		c.stats.coalesced.Add(1)
		return f.err
	}
	// Nothing to share (a 2.03 for someone else's ETag, a response that
	// may not be reused): this request goes upstream itself.
	e, found := c.lookup(r.Msg, k, id, hop, now)
	return c.forward(ctx, next, w, r, k, id, hop, e, found)
}

var errNoShare = errors.New("cache: nothing to share")

// forward is forwardShared for a request nobody waits for.
func (c *Cache) forward(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request, k *reqKey, id [sha256.Size]byte, hop int, e snapshot, found bool) error {
	return c.forwardShared(ctx, next, w, r, k, id, hop, e, found, nil)
}

// forwardShared sends the request on, as a validation of a stale entry
// with an ETag when there is one (§5.6.2), stores what comes back if it is
// cacheable (PR3.2), and answers the client. It gives land, when set, the
// response identical requests may share: a cacheable one, as the server
// sent it. When next answers later (coap.ErrLater), all of that happens
// when the answer comes, and forwardShared returns ErrLater.
func (c *Cache) forwardShared(ctx context.Context, next coap.Handler, w coap.ResponseWriter, r *coap.Request, k *reqKey, id [sha256.Size]byte, hop int, e snapshot, found bool, land func(*coap.Message, error)) error {
	if land == nil {
		land = func(*coap.Message, error) {}
	}
	m := r.Msg
	fwd := r
	if found && !e.fresh(c.now()) && e.etag != nil && !k.protected {
		// A protected request is never changed; for the others adding
		// the stored ETag is the validation §5.6.2 describes.
		if !hasETag(m, e.etag) {
			out := *m
			out.Options = append(make(coap.Options, 0, len(m.Options)+1), m.Options...).Insert(coap.ETag, e.etag)
			v := *r
			v.Msg = &out
			fwd = &v
		}
		c.stats.revalidations.Add(1)
	}
	ww, cw := coap.WrapWriterWith[capture](w)
	err := next.ServeCoAP(ctx, ww, fwd)
	if errors.Is(err, coap.ErrLater) {
		// The answer comes to cw, and what follows runs then.
		cw.whenFinished(func(resp *coap.Message, err error) {
			shared, again, err := c.settle(w, k, id, hop, m, fwd, r, resp, err)
			if again {
				// Not on the upstream's reader: this one waits.
				dctx := coap.Detached(ctx)
				go func() {
					coap.Finish(w, c.forwardShared(dctx, next, w, r, k, id, hop, snapshot{}, false, land))
					k.release()
				}()
				return
			}
			k.release()
			land(shared, err)
			coap.Finish(w, err)
		})
		return err
	}
	shared, again, err := c.settle(w, k, id, hop, m, fwd, r, cw.close(), err)
	if again {
		return c.forwardShared(ctx, next, w, r, k, id, hop, snapshot{}, false, land)
	}
	land(shared, err)
	return err
}

// settle stores and answers what a forwarded request got: resp, or err
// when there is none. It returns the response identical requests may
// share, whether the request must be forwarded once more as the client
// sent it (again), and the error for the client.
func (c *Cache) settle(w coap.ResponseWriter, k *reqKey, id [sha256.Size]byte, hop int, m *coap.Message, fwd, r *coap.Request, resp *coap.Message, err error) (*coap.Message, bool, error) {
	if resp == nil {
		return nil, false, err
	}
	resp.Token, resp.MID, resp.Type = nil, 0, 0
	now := c.now()
	rid := k.rep()
	if resp.Code == coap.Valid {
		tag, ok := resp.Options.Get(coap.ETag)
		if !ok && count(fwd.Msg.Options, coap.ETag) == 1 {
			tag, _ = fwd.Msg.Options.Get(coap.ETag) // §5.9.1.3: the one ETag sent
		}
		c.mu.Lock()
		fresh, refreshed := c.refresh(id, tag, resp, now)
		if !refreshed && len(tag) > 0 {
			// Validating one block validates the complete
			// representation (RFC 7959 §2.10), and tells which one is
			// current: the blocks of any other are dropped.
			var expires time.Time
			if maxAge, ok := c.maxAge(resp); ok {
				expires = now.Add(maxAge)
			}
			c.learn(rid, nil, tag, false, expires)
		}
		c.mu.Unlock()
		switch {
		case refreshed && hasETag(m, tag):
			return nil, false, firstErr(w.WriteResponse(valid(&fresh, now)), err)
		case refreshed:
			// The client asked for the representation: the 2.03 that
			// validated the proxy's own ETag becomes the full response.
			return nil, false, firstErr(w.WriteResponse(answer(&fresh, now)), err)
		case fwd != r && !hasETag(m, tag):
			// It validated the proxy's ETag, but the entry is gone
			// meanwhile (evicted, invalidated): ask again as the
			// client did.
			return nil, true, nil
		}
		return nil, false, firstErr(w.WriteResponse(resp), err)
	}
	maxAge, cacheable := c.cacheable(resp)
	var shared *coap.Message
	c.mu.Lock()
	if cacheable {
		if !c.put(Key{ID: id, URI: k.uri(), Rep: rid}, resp, maxAge, hop, now) {
			c.log.Debug("response not stored", "reason", "over max_entry_bytes", "size", entrySize(resp))
		}
		shared = resp
		delete(c.unshared, id)
	} else {
		if old := c.entries[id]; old != nil {
			// A newer answer that may not be stored still outdates the old.
			c.remove(old)
		}
		c.learnFrom(rid, resp)
		if len(c.unshared) >= maxUnshared {
			clear(c.unshared)
		}
		c.unshared[id] = struct{}{}
	}
	c.mu.Unlock()
	return shared, false, firstErr(w.WriteResponse(resp), err)
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// capture is the cache's part of the writer later stages see: it keeps
// the response, which the cache writes to the client itself, whichever
// way it was written (a copy, unless handed over with WriteOwned). When
// they answer later (coap.ErrLater), their Finish hands it to then. Its
// bools sit together: with the writer it fits a smaller size class.
type capture struct {
	mu       sync.Mutex
	resp     *coap.Message                       // guarded by mu
	then     func(resp *coap.Message, err error) // guarded by mu: set by whenFinished
	ferr     error                               // guarded by mu: Finish's error
	closed   bool                                // guarded by mu: next returned
	finished bool                                // guarded by mu: Finish ran
}

var _ coap.Wrapper = (*capture)(nil)

// Finish ends an answer that came later.
func (cw *capture) Finish(_ coap.Next, err error) {
	cw.mu.Lock()
	if cw.finished {
		cw.mu.Unlock()
		return
	}
	then, resp := cw.then, cw.resp
	cw.then, cw.closed, cw.finished, cw.ferr = nil, true, true, err
	cw.mu.Unlock()
	if then != nil {
		then(resp, err)
	}
}

// whenFinished has then run with the answer once Finish ends it, or at
// once if it already has: coap.Later starts the exchange after the chain
// returns, but outside an endpoint it starts at once, and the answer may
// come first.
func (cw *capture) whenFinished(then func(resp *coap.Message, err error)) {
	cw.mu.Lock()
	if !cw.finished {
		cw.then = then
		cw.mu.Unlock()
		return
	}
	resp, err := cw.resp, cw.ferr
	cw.mu.Unlock()
	then(resp, err)
}

// Write keeps the response: m itself when it is handed over (the
// upstream's response, which the router writes with coap.WriteOwned),
// else a copy.
func (cw *capture) Write(next coap.Next, m *coap.Message) error {
	if m == nil {
		return errNilResponse
	}
	if !next.Owned() {
		m = m.Clone()
	}
	return cw.keep(m)
}

func (cw *capture) keep(m *coap.Message) error {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.resp != nil || cw.closed {
		return coap.ErrAnswered
	}
	cw.resp = m
	return nil
}

var errNilResponse = errors.New("cache: nil response")

func (cw *capture) close() *coap.Message {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.closed = true
	return cw.resp
}

// answer builds a hit: the stored response, byte-identical except Max-Age,
// which is the remaining freshness in whole seconds, rounded down (PR3.4).
func answer(e *snapshot, now time.Time) *coap.Message {
	src := e.resp
	out := &hitMsg{}
	out.m.Code = src.Code
	out.m.Payload = src.Payload
	age := out.maxAge(e, now)
	opts := make(coap.Options, 0, len(src.Options)+1)
	placed := false
	for _, o := range src.Options {
		// A stored notification answers a plain GET without its Observe
		// option: that client is not registered (RFC 7641 §3.2, §4.1).
		if o.ID == coap.MaxAge || o.ID == coap.Observe {
			continue
		}
		if !placed && o.ID > coap.MaxAge {
			opts = append(opts, coap.Option{ID: coap.MaxAge, Value: age})
			placed = true
		}
		opts = append(opts, o)
	}
	if !placed {
		opts = append(opts, coap.Option{ID: coap.MaxAge, Value: age})
	}
	out.m.Options = opts
	return &out.m
}

// valid builds the 2.03 for a client whose ETag is the fresh one (PR3.3,
// §5.9.1.3): ETag and Max-Age, no payload.
func valid(e *snapshot, now time.Time) *coap.Message {
	out := &hitMsg{}
	out.m.Code = coap.Valid
	out.opts[0] = coap.Option{ID: coap.ETag, Value: e.etag}
	out.opts[1] = coap.Option{ID: coap.MaxAge, Value: out.maxAge(e, now)}
	out.m.Options = out.opts[:]
	return &out.m
}

// hitMsg holds an answer and its Max-Age value in one allocation.
type hitMsg struct {
	m    coap.Message
	age  [4]byte
	opts [2]coap.Option
}

func (h *hitMsg) maxAge(e *snapshot, now time.Time) []byte {
	left := e.expires.Sub(now) / time.Second // floor: never rounded up (PR3.4)
	if left < 0 {
		left = 0
	}
	if left > 0xffffffff {
		left = 0xffffffff
	}
	v := uint32(left)
	n := 0
	for s := 24; s >= 0; s -= 8 {
		if b := byte(v >> s); b != 0 || n > 0 {
			h.age[n] = b
			n++
		}
	}
	return h.age[:n:n]
}

func hasETag(m *coap.Message, tag []byte) bool {
	for v := range m.Options.All(coap.ETag) {
		if bytes.Equal(v, tag) {
			return true
		}
	}
	return false
}

// hopLimit is the request's Hop-Limit after the hop-limit stage, noHop
// when it has none.
func hopLimit(m *coap.Message) int {
	if v, ok := m.Options.Get(coap.HopLimit); ok && len(v) == 1 {
		return int(v[0])
	}
	return noHop
}
