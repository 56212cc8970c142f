package coap

// The client half of the endpoint: Do and Go send requests and match the
// responses by token (§5.3.2); an Observation's notifications arrive here
// too.

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"
)

// tokKey names a client exchange by peer and token (§5.3.2). Tokens the
// endpoint allocates are 8 bytes, so they fit a uint64.
type tokKey struct {
	peer netip.AddrPort
	tok  uint64
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

func (e *Endpoint) receiveResponse(m *Message, peer netip.AddrPort) {
	k := exKey{peer, m.MID}
	switch m.Type {
	case Acknowledgement:
		// Piggybacked (§5.2.1): ends our CON's retransmission, if it
		// carries the request's token (§5.3.2). An ACK for nothing
		// pending is a duplicate or too late.
		e.mu.Lock()
		p, ok := e.pending[k]
		match := ok && string(p.token()) == string(m.Token)
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
		if dup, reply := e.dedup(k, e.clock.Now()); dup {
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
	now := e.clock.Now()
	g := &goCall{e: e, done: done, deadline: e.since(now) + int64(timeout)}
	g.con.tokLen = uint8(len(g.con.tok))
	binary.BigEndian.PutUint64(g.con.tok[:], rand.Uint64())
	out := *req
	out.Token = g.con.tok[:]
	out.MID = e.allocMID(to)
	if out.Type != NonConfirmable {
		out.Type = Confirmable
	}
	data, err := out.Marshal()
	if err != nil {
		done(nil, fmt.Errorf("coap: encode request: %w", err))
		return
	}
	g.call.g = g
	g.con.key, g.con.data, g.con.timeout, g.con.g = exKey{to, out.MID}, data, e.cfg.Params.initialTimeout(), g
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		done(nil, ErrClosed)
		return
	}
	e.calls[g.key()] = &g.call
	e.peaks.calls = max(e.peaks.calls, len(e.calls))
	wait := timeout
	if out.Type == Confirmable {
		e.pending[g.con.key] = &g.con
		e.peaks.pending = max(e.peaks.pending, len(e.pending))
		wait = min(wait, g.con.timeout)
	}
	e.schedule(&g.con, now, wait)
	e.mu.Unlock()
	e.write(to, data)
}

// goCall is an exchange of Go in one allocation: its call, its CON (which
// holds its token), and its place among the endpoint's timers, for both
// the retransmissions (§4.2) and the deadline. One is allocated for every
// request forwarded: TestPerRequestStructsFitTheirSizeClasses keeps it in
// the 192-byte size class.
type goCall struct {
	call
	con      outCon
	e        *Endpoint
	deadline int64 // on the endpoint's monotonic clock (e.since)
	done     func(*Message, error)
}

// key is the exchange's key in e.calls. It is made from the CON's peer
// and token rather than kept: 40 bytes more would put a goCall in a
// larger size class.
func (g *goCall) key() tokKey {
	return tokKey{g.con.key.peer, binary.BigEndian.Uint64(g.con.tok[:])}
}

// onTimer retransmits the request, or fails the exchange at its
// deadline; now is t on the endpoint's clock. After an empty ACK (§5.2.2)
// nothing is retransmitted, and the timer waits for the deadline alone.
func (g *goCall) onTimer(now time.Time, t int64) {
	if t >= g.deadline {
		g.deliver(callResult{err: context.DeadlineExceeded})
		return
	}
	if !g.e.retransmit(&g.con) {
		g.e.mu.Lock()
		if !g.fired.Load() {
			g.e.schedule(&g.con, now, time.Duration(g.deadline-t))
		}
		g.e.mu.Unlock()
	}
}

// finish ends the exchange with its first result.
func (g *goCall) finish(r callResult) {
	e := g.e
	e.mu.Lock()
	e.unschedule(&g.con)
	if tk := g.key(); e.calls[tk] == &g.call {
		delete(e.calls, tk)
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
