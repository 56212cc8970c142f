package observe

import (
	"errors"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Delivery: Notify fills every observer's slot (latest wins) and queues
// the observers that are idle; a fixed pool of workers pops them, up to
// deliveryBatch at a time, renders the slot for each and hands them to
// their NotifyWriters together (coap.NotifyAll: one system call for many
// NONs). An observer is in the queue at most once and has at most one
// notification in flight: while a CON awaits its ACK, newer states wait in
// the slot and overwrite each other. So the producer never waits for a
// client, the queue is bounded by the number of observers, and the
// goroutines by the pool's size.

// deliveryBatch is how many observers a worker serves at once: enough
// that a fan-out to thousands costs a few hundred system calls, few
// enough that the other workers share a burst.
const deliveryBatch = 64

// sending is one observer's notification in a worker's batch.
type sending struct {
	o     *observer
	final bool
}

func (h *Hub) work() {
	defer h.wg.Done()
	var (
		batch []sending
		ns    []coap.Notification
		room  = &scratch{msgs: make([]coap.Message, 0, deliveryBatch)}
	)
	for {
		batch, ns = batch[:0], ns[:0]
		room.reset()
		h.mu.Lock()
		for len(h.ready) == 0 && !h.closed {
			h.cond.Wait()
		}
		if h.closed {
			h.mu.Unlock()
			return
		}
		now := h.clock.Now()
		for len(h.ready) > 0 && len(batch) < deliveryBatch {
			o := h.ready[0]
			h.ready[0] = nil
			h.ready = h.ready[1:]
			o.queued = false
			if o.gone || o.busy || !o.dirty {
				continue
			}
			n, at, final := o.e.last, o.e.lastAt, o.final
			o.dirty = false
			con := h.confirmable(o, now)
			done := o.deliveredNON
			if con {
				done = o.deliveredCON
			}
			o.busy = true
			batch = append(batch, sending{o, final})
			ns = append(ns, coap.Notification{W: o.w, Resp: h.renderTo(room, o, n, at, now), CON: con, Done: done})
		}
		if len(h.ready) == 0 {
			h.ready = h.ready[:0:0] // let a drained backlog's array go
		}
		h.mu.Unlock()
		if len(batch) == 0 {
			continue
		}

		coap.NotifyAll(ns)
		h.st.out.Add(uint64(len(ns)))
		h.mu.Lock()
		for i, b := range batch {
			o := b.o
			if !ns[i].CON {
				o.busy = false
			}
			switch {
			case ns[i].Err != nil:
				h.log.Debug("notification not sent", "peer", o.id.peer(), "err", ns[i].Err)
				h.removeLocked(o)
			case b.final:
				// §3.2: the final notification ends the observation.
				h.removeLocked(o)
			default:
				h.readyLocked(o)
			}
		}
		h.mu.Unlock()
		clear(ns) // the batch's messages, writers and observers are not kept
		clear(batch)
	}
}

// confirmable decides whether o's next notification is a CON and counts
// it. §4.5: NON by default, with a CON every CONEvery notifications and at
// least every CONInterval, so that an observer that went away is found out
// and removed: its CON times out or is rejected. Over a stream (RFC 8323
// §7.2) there is neither: a "CON" there is one whose done comes when it is
// written, which keeps one notification per observer in the connection's
// queue and the newer ones in the slot. Called with h.mu held.
func (h *Hub) confirmable(o *observer, now time.Time) bool {
	_, reliable := o.w.(coap.StreamWriter)
	con := h.allCON || reliable || int(o.sinceCON)+1 >= h.cfg.CONEvery ||
		now.Sub(time.Unix(0, o.lastCON)) >= h.cfg.CONInterval.Duration
	if con {
		o.lastCON, o.sinceCON = now.UnixNano(), 0
	} else {
		o.sinceCON++
	}
	return con
}

// deliveredCON and deliveredNON report the outcome of a notification.
// As method values they hold the observer and nothing else, the smallest
// callback there is: the endpoint keeps a NON's for a while, to match an
// RST (RFC 7641 §3.6), and there is one per notification.
func (o *observer) deliveredCON(err error) { o.e.h.delivered(o, true, err) }
func (o *observer) deliveredNON(err error) { o.e.h.delivered(o, false, err) }

// delivered is the outcome of one notification. A CON frees the observer
// for the next state; an RST (§3.6, §4.5), a CON that timed out (§4.5) or
// the network's report that the observer is unreachable (a port closed
// by a client that died: RFC 7252 §4.2) removes it.
func (h *Hub) delivered(o *observer, con bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if con {
		o.busy = false
	}
	if o.gone {
		return
	}
	switch {
	case errors.Is(err, coap.ErrReset), errors.Is(err, coap.ErrTimeout), errors.Is(err, coap.ErrUnreachable):
		h.st.dereg.Add(1)
		switch {
		case errors.Is(err, coap.ErrReset):
			h.st.rejected.Add(1)
		case errors.Is(err, coap.ErrTimeout):
			h.st.unconfirmed.Add(1)
		default:
			h.st.unreachable.Add(1)
		}
		h.log.Debug("observer removed", "peer", o.id.peer(), "err", err)
		h.removeLocked(o)
	case err != nil:
		// The endpoint closed: nobody to notify any more.
		h.removeLocked(o)
	default:
		h.readyLocked(o)
	}
}

// renderLocked is n as observer o gets it: with o's next Observe number
// (PR4.2, RFC 7641 §4.4) and Max-Age reduced by the time n has waited
// (§4.3.1), everything else as the origin sent it (PR1.3). A protected
// observation's messages go out exactly as they came: the outer Observe
// is the origin's (RFC 8613 §4.1.3.5.2) and nothing else may be touched.
func (h *Hub) renderLocked(o *observer, n *coap.Message, at, now time.Time) *coap.Message {
	return h.renderTo(nil, o, n, at, now)
}

// scratch is a worker's room for one batch of rendered notifications,
// reused batch after batch: each batch is encoded and sent before the
// next is rendered. It spares the garbage of a message and its options
// per notification, which a fan-out to thousands turns into GC cycles.
type scratch struct {
	msgs []coap.Message // capacity deliveryBatch: never moves
	opts coap.Options   // the batch's options, one message's after another's
}

func (s *scratch) reset() {
	clear(s.msgs)
	clear(s.opts)
	s.msgs, s.opts = s.msgs[:0], s.opts[:0]
}

// renderTo is renderLocked into s, or into new memory when s is nil.
func (h *Hub) renderTo(s *scratch, o *observer, n *coap.Message, at, now time.Time) *coap.Message {
	if o.e.protected {
		return n
	}
	// Room for one more option: Observe is only ever replaced (n has
	// it), Max-Age may be added.
	var out *coap.Message
	var opts coap.Options
	if s == nil || len(s.msgs) == cap(s.msgs) {
		out = &coap.Message{}
		opts = make(coap.Options, len(n.Options), len(n.Options)+1)
	} else {
		s.msgs = append(s.msgs, coap.Message{})
		out = &s.msgs[len(s.msgs)-1]
		// Earlier messages keep their part even if the arena moves.
		start := len(s.opts)
		s.opts = append(s.opts, n.Options...)
		s.opts = append(s.opts, coap.Option{})
		opts = s.opts[start : start+len(n.Options) : start+len(n.Options)+1]
	}
	out.Code, out.Payload = n.Code, n.Payload
	copy(opts, n.Options)
	if n.Options.Has(coap.Observe) {
		o.seq = (o.seq + 1) & seqMask
		h.seqBase.Add(1)
		opts = setUint(opts, coap.Observe, o.seq)
	}
	out.Options = ageMaxAge(opts, n, now.Sub(at))
	return out
}

// ageMaxAge sets Max-Age in opts to what is left of n's after age: the
// remaining freshness in whole seconds, rounded down and never up (RFC
// 7252 §5.6.1, PR3.4). When nothing changes the option stays as it came.
func ageMaxAge(opts coap.Options, n *coap.Message, age time.Duration) coap.Options {
	if age < time.Second {
		return opts
	}
	ma := maxAge(n)
	left := time.Duration(ma)*time.Second - age
	var v uint32
	if left > 0 {
		v = uint32(left / time.Second)
	}
	if v == ma {
		return opts
	}
	return setUint(opts, coap.MaxAge, v)
}

// setUint replaces the value of id in place when it is there, else
// inserts it; opts must be the caller's own slice.
func setUint(opts coap.Options, id coap.OptionID, v uint32) coap.Options {
	enc := coap.EncodeUint(v)
	for i := range opts {
		if opts[i].ID == id {
			opts[i].Value = enc
			rest := dropID(opts[i+1:], id)
			return opts[:i+1+len(rest)]
		}
	}
	return opts.Insert(id, enc)
}

// dropID removes further values of a non-repeatable option in place.
func dropID(opts coap.Options, id coap.OptionID) coap.Options {
	out := opts[:0]
	for _, o := range opts {
		if o.ID != id {
			out = append(out, o)
		}
	}
	return out
}
