package observe

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Stage is the hub's link in the proxy's chain: it sits after the local
// stage and before the cache and route stages. Registrations (GET or
// FETCH with Observe=0) and deregistrations (Observe=1) are the hub's;
// everything else passes to next untouched. A registration waits for its
// first response, so an endpoint must not serve it on its reader
// (coap.Inline); the stages after the hub run it detached.
func (h *Hub) Stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		m := r.Msg
		if m == nil || !m.Code.IsSafe() {
			return next.ServeCoAP(ctx, w, r)
		}
		v, ok := m.Options.Uint(coap.Observe)
		switch {
		case ok && v == 0:
			return h.register(ctx, w, r, next)
		case ok && v == 1:
			h.deregister(r)
		}
		return next.ServeCoAP(ctx, w, r)
	})
}

// entryKey names an observation: the key function's key for a shared
// one, or for one of its own (own) a key made of the client's endpoint,
// token and transport. A struct rather than a string with a prefix, so
// that the key function's key is used as it is, not copied for every
// registration.
type entryKey struct {
	k   string
	own bool
}

// keyOf is the observation a registration joins. A protected request
// (OSCORE, RFC 8613 §4.1.3.5) or one the key function cannot name gets a
// key of its own, so it is never aggregated: each OSCORE client has its
// own security context and its own Partial IVs.
func (h *Hub) keyOf(r *coap.Request) entryKey {
	if !r.Msg.Options.Has(coap.OSCORE) {
		if k, ok := h.key(r); ok {
			return entryKey{k: k}
		}
	}
	b := make([]byte, 0, 40)
	b = append(b, r.Peer.String()...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Msg.Token)))
	b = append(b, r.Msg.Token...)
	if r.Secure {
		b = append(b, 's')
	}
	return entryKey{k: string(b), own: true}
}

// deregister removes the observer a GET with Observe=1 names (RFC 7641
// §3.6); the request itself then goes on as an ordinary GET. For a
// protected observation the options cannot be compared (they are inside
// the OSCORE payload), so peer and token decide.
func (h *Hub) deregister(r *coap.Request) {
	id, ok := idOf(r)
	if !ok {
		return
	}
	key := h.keyOf(r)
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.observers.get(id)
	if o == nil || o.gone || (!key.own && o.e.key != key) {
		return
	}
	h.st.dereg.Add(1)
	h.removeLocked(o)
}

// register serves a GET or FETCH with Observe=0.
func (h *Hub) register(ctx context.Context, w coap.ResponseWriter, r *coap.Request, next coap.Handler) error {
	nw, ok := w.(coap.NotifyWriter)
	if !ok {
		// Nothing to send notifications through.
		return h.plain(ctx, w, r, next)
	}
	id, ok := idOf(r)
	if !ok {
		return h.plain(ctx, w, r, next)
	}
	key := h.keyOf(r)
	now := h.clock.Now()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return h.plain(ctx, w, r, next)
	}
	if o := h.observers.get(id); o != nil && !o.gone && o.e.key == key && !key.own && o.e.state == stateActive {
		// §4.1: the client is in the list already: update the entry and
		// give it the current representation with its next number.
		o.w = nw
		o.started = false
		resp := h.renderLocked(o, o.e.last, o.e.lastAt, now)
		h.mu.Unlock()
		err := nw.WriteResponse(resp)
		h.mu.Lock()
		h.startLocked(o)
		h.mu.Unlock()
		return err
	} else if o != nil {
		// A new registration with the token of another one replaces it.
		h.removeLocked(o)
	}
	if !h.reserveLocked(id.addr) {
		h.mu.Unlock()
		h.st.overLimit.Add(1)
		return h.plain(ctx, w, r, next)
	}
	e := h.entries[key]
	if e != nil && e.state == stateActive {
		o := h.addLocked(e, id, nw, now)
		resp := h.renderLocked(o, e.last, e.lastAt, now)
		h.mu.Unlock()
		err := nw.WriteResponse(resp)
		h.mu.Lock()
		h.startLocked(o)
		h.mu.Unlock()
		return err
	}
	wt := &waiter{id: id, w: nw, done: make(chan struct{})}
	if e != nil {
		// Coalesced: one registration per key is in next already.
		e.waiters = append(e.waiters, wt)
		h.mu.Unlock()
		return h.wait(ctx, e, wt)
	}
	e = &entry{h: h, key: key, protected: key.own, next: next, state: stateRegistering, name: resourceOf(r.Msg)}
	if !key.own {
		// Kept for re-registration; protected ones are never replayed
		// (RFC 8613 §4.1.3.5.1).
		e.req = &coap.Request{Msg: r.Msg.Clone(), Peer: r.Peer, Secure: r.Secure}
	}
	e.waiters = append(e.waiters, wt)
	e.leader = wt
	h.entries[key] = e
	g := &registration{h: h, e: e}
	e.reg = g
	h.mu.Unlock()

	cw := newCapture(h, g, wt)
	req := *r
	req.Observer = g
	// The hub waits for the first response, so the stages after it run
	// detached: an answer they give later (coap.Later) starts at once,
	// not once this handler has returned.
	err := next.ServeCoAP(coap.Detached(ctx), coap.WrapWriter(w, cw), &req)
	if errors.Is(err, coap.ErrLater) {
		err = cw.wait(ctx)
	}
	h.mu.Lock()
	if !g.done {
		// next answered nobody: every waiter gets the same outcome.
		if err == nil {
			err = coap.Errorf(coap.BadGateway, "no response")
		}
		h.failLocked(g, err)
	}
	h.mu.Unlock()
	if cw.wrote.Load() {
		return cw.err
	}
	return err
}

// wait blocks a coalesced registration until the first one's outcome.
func (h *Hub) wait(ctx context.Context, e *entry, wt *waiter) error {
	select {
	case <-wt.done:
		return h.finish(wt)
	case <-ctx.Done():
	}
	h.mu.Lock()
	select {
	case <-wt.done:
		if wt.obs != nil {
			h.removeLocked(wt.obs)
		}
	default:
		for i, x := range e.waiters {
			if x == wt {
				e.waiters = append(e.waiters[:i], e.waiters[i+1:]...)
				h.releaseLocked(wt.id.addr)
				break
			}
		}
	}
	h.mu.Unlock()
	return ctx.Err()
}

// finish writes a waiter's first response and, if it became an observer,
// lets its notifications flow.
func (h *Hub) finish(wt *waiter) error {
	if wt.resp == nil {
		return wt.err
	}
	err := wt.w.WriteResponse(wt.resp)
	if wt.obs != nil {
		h.mu.Lock()
		h.startLocked(wt.obs)
		h.mu.Unlock()
	}
	return err
}

// failLocked ends a registration that got no response: waiters return
// err (their endpoints answer with its code), a re-registration ends the
// observation with the matching error response.
func (h *Hub) failLocked(g *registration, err error) {
	e := g.e
	if e.state != stateRegistering {
		h.resolveLocked(g, errorResponse(err))
		return
	}
	g.done = true
	h.cancelLocked(g)
	e.state = stateEnded
	if h.entries[e.key] == e {
		delete(h.entries, e.key)
	}
	for _, wt := range e.waiters {
		h.releaseLocked(wt.id.addr)
		if wt.resp == nil {
			wt.err = err
		}
		if wt != e.leader {
			close(wt.done)
		}
	}
	e.waiters = nil
}

// resolveLocked handles the first response of a registration: the first
// one of an entry, or a re-registration.
func (h *Hub) resolveLocked(g *registration, resp *coap.Message) {
	g.done = true
	e := g.e
	now := h.clock.Now()
	observable := resp.Code.Class() == 2 && resp.Options.Has(coap.Observe)
	if e.state != stateRegistering {
		// A re-registration (liveness).
		e.rereg = false
		if e.state != stateActive || h.closed || g.dead {
			h.cancelLocked(g)
			return
		}
		old := e.reg
		e.reg = g
		h.cancelLocked(old)
		if !observable {
			// The resource stopped being observable, or failed: the
			// response goes to every observer and ends the observation.
			resp = withoutObserve(resp)
		}
		h.notifyLocked(e, resp, now, true)
		h.applyEarlyLocked(g)
		return
	}
	if !observable || h.closed {
		// Not observable (§4.1: no Observe in the response) or not 2.xx:
		// everyone waiting gets the response, nothing is registered.
		h.cancelLocked(g)
		e.state = stateEnded
		if h.entries[e.key] == e {
			delete(h.entries, e.key)
		}
		for _, wt := range e.waiters {
			h.releaseLocked(wt.id.addr)
			wt.resp = resp
			if wt != e.leader {
				close(wt.done)
			}
		}
		e.waiters = nil
		return
	}
	e.state = stateActive
	e.last, e.lastAt = resp, now
	e.lastSeq, _ = resp.Options.Uint(coap.Observe)
	e.haveSeq = true
	for _, wt := range e.waiters {
		o := h.addLocked(e, wt.id, wt.w, now)
		wt.obs = o
		wt.resp = h.renderLocked(o, resp, now, now)
		if wt != e.leader {
			close(wt.done)
		}
	}
	e.waiters, e.leader = nil, nil
	h.armLocked(e, resp, now)
	h.applyEarlyLocked(g)
}

// applyEarlyLocked feeds a notification that overtook the first response
// (the route stage writes the response after the origin sent it) through
// the usual order check.
func (h *Hub) applyEarlyLocked(g *registration) {
	if g.early == nil {
		return
	}
	n, at := g.early, g.earlyAt
	g.early = nil
	e := g.e
	if e.state != stateActive {
		return
	}
	if v2, ok := n.Options.Uint(coap.Observe); ok && e.haveSeq && !fresher(e.lastSeq, e.lastAt, v2, at) {
		h.st.stale.Add(1)
		return
	}
	h.notifyLocked(e, n, at, true)
}

// captureWriter is the hub's part of the writer it hands to next for a
// registration (coap.Wrapper): the first response is the hub's to share,
// and goes to the leader, the client whose registration this is, as
// rendered for it. Notifications come through Request.Observer.
type captureWriter struct {
	h      *Hub
	g      *registration
	leader *waiter // nil for a re-registration

	once  sync.Once
	wrote atomic.Bool // the leader was answered; err is set before
	err   error       // the leader's write error

	endOnce sync.Once
	ended   chan struct{} // closed by Finish: next answered later
	ferr    error         // Finish's error, set before ended closes
}

var _ coap.Wrapper = (*captureWriter)(nil)

func newCapture(h *Hub, g *registration, leader *waiter) *captureWriter {
	return &captureWriter{h: h, g: g, leader: leader, ended: make(chan struct{})}
}

// Finish ends a registration next answered later (coap.ErrLater).
func (cw *captureWriter) Finish(_ coap.Next, err error) {
	cw.endOnce.Do(func() {
		cw.ferr = err
		close(cw.ended)
	})
}

// wait waits for Finish of a registration next answered later, and
// returns its error, or ctx's.
func (cw *captureWriter) wait(ctx context.Context) error {
	select {
	case <-cw.ended:
		return cw.ferr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (cw *captureWriter) Write(_ coap.Next, resp *coap.Message) error {
	answered := true
	cw.once.Do(func() {
		answered = false
		resp = resp.Clone()
		h := cw.h
		h.mu.Lock()
		if cw.g.done {
			h.mu.Unlock()
			return
		}
		h.resolveLocked(cw.g, resp)
		h.mu.Unlock()
		if cw.leader != nil {
			cw.err = h.finish(cw.leader)
			cw.wrote.Store(true)
		}
	})
	if answered {
		return coap.ErrAnswered
	}
	return cw.err
}

// plain serves a registration without making an observer (RFC 7641 §4.1:
// the response then carries no Observe option): over the bounds, after
// Close, or when the transport cannot notify. A fresh shared state
// answers at once; else the request goes on without Observe.
func (h *Hub) plain(ctx context.Context, w coap.ResponseWriter, r *coap.Request, next coap.Handler) error {
	protected := r.Msg.Options.Has(coap.OSCORE)
	if !protected {
		if k, ok := h.key(r); ok {
			now := h.clock.Now()
			h.mu.Lock()
			e := h.entries[entryKey{k: k}]
			var resp *coap.Message
			if e != nil && e.state == stateActive && now.Sub(e.lastAt) < time.Duration(maxAge(e.last))*time.Second {
				resp = withoutObserve(e.last)
				resp.Options = ageMaxAge(resp.Options, e.last, now.Sub(e.lastAt))
			}
			h.mu.Unlock()
			if resp != nil {
				return w.WriteResponse(resp)
			}
		}
		// A copy without Observe: the cache may answer it, the origin
		// registers nothing.
		req := *r
		m := *r.Msg
		m.Options = append(coap.Options(nil), r.Msg.Options...).Remove(coap.Observe)
		req.Msg = &m
		return next.ServeCoAP(ctx, coap.WrapWriter(w, stripObserve{}), &req)
	}
	// A protected request passes byte-identical (PR1.3); only the outer
	// Observe of its response is dropped, so that the client does not
	// wait for notifications that will never come.
	return next.ServeCoAP(ctx, coap.WrapWriter(w, stripObserve{}), r)
}

// stripObserve removes the Observe option from a response (coap.Wrapper).
type stripObserve struct{ coap.PassFinish }

var _ coap.Wrapper = stripObserve{}

func (stripObserve) Write(next coap.Next, resp *coap.Message) error {
	if !resp.Options.Has(coap.Observe) {
		return next.Write(resp)
	}
	return next.Write(withoutObserve(resp))
}

// withoutObserve returns a shallow copy of m with its own option slice and
// no Observe option.
func withoutObserve(m *coap.Message) *coap.Message {
	c := *m
	c.Options = append(coap.Options(nil), m.Options...).Remove(coap.Observe)
	return &c
}
