package observe

import (
	"context"
	"errors"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func maxAge(m *coap.Message) uint32 {
	if v, ok := m.Options.Uint(coap.MaxAge); ok {
		return v
	}
	return defaultMaxAge
}

// expire re-registers an observation that went quiet past its Max-Age.
func (h *Hub) expire(e *entry, g *registration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || e.state != stateActive || e.reg != g || e.rereg || len(e.obs) == 0 {
		return
	}
	e.rereg = true
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.reregister(e)
	}()
}

// protectedLiveness is how long a protected observation may stay quiet
// after m. The hub cannot read the inner Max-Age by which the client
// judges freshness, and the outer one says nothing of it: a server may
// set it to 0 only to keep intermediaries from caching (RFC 8613
// §4.1.3.1, Appendix D.5.2). So the hub waits long: a day, the time RFC
// 7641 §4.5 gives a server to confirm that an observer is still there,
// or the outer Max-Age if that is longer, plus livenessMargin. A client
// that keeps time by a shorter inner Max-Age re-registers long before
// (RFC 7641 §3.3.1).
func protectedLiveness(m *coap.Message) time.Duration {
	idle := protectedIdle
	if ma, ok := m.Options.Uint(coap.MaxAge); ok {
		idle = max(idle, time.Duration(ma)*time.Second)
	}
	return idle + livenessMargin
}

// expireProtected ends a protected observation whose origin has sent
// nothing for protectedLiveness: the hub cannot re-register it (RFC 8613
// §4.1.3.5.1), so it frees the state and stops the upstream observation
// as when the last observer leaves (endLocked; a later notification is
// answered with RST, RFC 7641 §3.6). The client is sent nothing, as
// nothing the hub could make would verify: it keeps its own time by the
// inner Max-Age and re-registers (RFC 7641 §3.3.1), which is then a fresh
// registration.
func (h *Hub) expireProtected(e *entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// An entry that ended meanwhile (deregistration, RST, a final
	// notification, or the client re-registering with the same token,
	// which replaces the entry in register) is none of the timer's
	// business.
	if h.closed || e.state != stateActive {
		return
	}
	// A newer notification that came while this timer fired has armed a
	// timer of its own.
	quiet := h.clock.Now().Sub(e.lastAt)
	if quiet < protectedLiveness(e.last) {
		return
	}
	h.st.protExpired.Add(1)
	if len(e.obs) > 0 {
		h.log.Debug("protected observation expired", "peer", e.obs[0].id.peer(), "quiet", quiet)
	}
	h.endLocked(e)
}

// reregister makes a fresh upstream registration for e through next, with
// the hub's own context: no client request is waiting.
func (h *Hub) reregister(e *entry) {
	g := &registration{h: h, e: e}
	ctx, cancel := context.WithTimeout(h.ctx, reregisterTimeout)
	defer cancel()
	cw := newCapture(h, g, nil)
	req := *e.req
	req.Observer = g
	err := e.next.ServeCoAP(ctx, coap.WrapWriter(nobody{}, cw), &req)
	if errors.Is(err, coap.ErrLater) {
		err = cw.wait(ctx)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if g.done {
		return
	}
	h.log.Debug("re-registration failed", "err", err)
	h.resolveLocked(g, errorResponse(err))
}

// nobody is the writer of a re-registration, which no client waits for:
// the first response goes to the hub's captureWriter, never on.
type nobody struct{}

func (nobody) WriteResponse(*coap.Message) error { return nil }
