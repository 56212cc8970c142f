package coap

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
)

var _ NotifyWriter = (*responseWriter)(nil)

func (w *responseWriter) Peer() netip.AddrPort { return w.peer }
func (w *responseWriter) Token() []byte        { return w.token() }

// notification appends resp, encoded as this observer's next
// notification, to buf; data is the part appended.
func (w *responseWriter) notification(buf []byte, resp *Message, con bool) (grown, data []byte, mid uint16, err error) {
	out := *resp
	out.Token = w.token()
	out.MID = w.e.allocMID(w.peer)
	out.Type = NonConfirmable
	if con {
		out.Type = Confirmable
	}
	start := len(buf)
	buf, err = out.AppendMarshal(buf)
	if err != nil {
		return buf, nil, 0, fmt.Errorf("coap: encode notification: %w", err)
	}
	return buf, buf[start:len(buf):len(buf)], out.MID, nil
}

// Notification is one notification for NotifyAll: the arguments of
// NotifyWriter.Notify, and Err, what Notify would have returned.
type Notification struct {
	W    NotifyWriter
	Resp *Message
	CON  bool
	Done func(error)
	Err  error
}

// NotifyAll sends each notification as its writer's Notify would, but the
// notifications to observers of one endpoint leave together, with as few
// system calls as the transport allows (BatchWriter): a fan-out to
// thousands of observers is then bound by the network, not by one
// sendto per observer. A CON is retransmitted on its own, as Notify's.
func NotifyAll(ns []Notification) {
	var (
		e     *Endpoint
		batch []Datagram
		arena []byte // the batch's datagrams, one after the other
	)
	flush := func() {
		if len(batch) > 0 {
			e.writeBatch(batch)
			batch = batch[:0]
		}
	}
	for i := range ns {
		n := &ns[i]
		// Wrappers pass notifications to the writer they wrap unchanged
		// (WrapWriter): the endpoint's, when it is one, batches them.
		w, ok := unwrap(n.W).(*responseWriter)
		if !ok {
			n.Err = n.W.Notify(n.Resp, n.CON, n.Done)
			continue
		}
		var data []byte
		var mid uint16
		var err error
		if n.CON {
			// Its own memory: it is kept for the retransmissions.
			_, data, mid, err = w.notification(nil, n.Resp, true)
		} else {
			if arena == nil {
				arena = make([]byte, 0, 64*len(ns))
			}
			arena, data, mid, err = w.notification(arena, n.Resp, false)
		}
		if err != nil {
			n.Err = err
			continue
		}
		if w.e != e {
			flush()
			e = w.e
		}
		switch {
		case n.CON:
			if !e.pendCON(w.peer, mid, nil, data, conDone(n.Done)) {
				continue
			}
		case e.ctx.Err() != nil:
			if n.Done != nil {
				n.Done(ErrClosed)
			}
			continue
		case n.Done != nil:
			e.nons.add(exKey{w.peer, mid}, w.token(), n.Done)
		}
		batch = append(batch, Datagram{B: data, To: w.peer})
	}
	flush()
}

// writeBatch sends datagrams, in one go where the transport can.
func (e *Endpoint) writeBatch(ds []Datagram) {
	bw, ok := e.t.(BatchWriter)
	if !ok {
		for _, d := range ds {
			e.write(d.To, d.B)
		}
		return
	}
	n, err := bw.WriteBatch(e.ctx, ds)
	e.stats.sent.Add(uint64(n))
	if err != nil && e.ctx.Err() == nil {
		e.log.Debug("batch write failed", "sent", n, "of", len(ds), "err", err)
	}
}

func (w *responseWriter) Notify(resp *Message, con bool, done func(error)) error {
	_, data, mid, err := w.notification(nil, resp, con)
	if err != nil {
		return err
	}
	if con {
		w.e.sendCON(w.peer, mid, data, conDone(done))
	} else {
		w.e.sendNON(w.peer, mid, data, done)
	}
	return nil
}

// conDone is a CON notification's outcome callback for sendCON.
func conDone(done func(error)) func(*Message, error) {
	return func(_ *Message, err error) {
		if done != nil {
			done(err)
		}
	}
}

// recentNONs bounds how many sent NONs the endpoint remembers to match an
// RST (RFC 7641 §3.6: a client rejects an unwanted notification with RST).
// A ring, not timers: a fan-out of many notifications a second costs a map
// entry each, not a timer and a pending exchange each.
const recentNONs = 1 << 16

// nonRing remembers the most recent NONs sent with an RST callback.
type nonRing struct {
	mu   sync.Mutex
	keys []exKey           // guarded by mu: ring, oldest at next
	next int               // guarded by mu
	sent map[exKey]nonSent // guarded by mu
}

// nonSent is a remembered NON: its callback, and its token, which an ICMP
// report that quotes the NON must match (RFC 7252 §4.2).
type nonSent struct {
	done func(error)
	tok  uint64
}

// tokenBits packs a token of up to 8 bytes (RFC 7252 §3) into a uint64.
func tokenBits(tok []byte) uint64 {
	var b [8]byte
	copy(b[:], tok)
	return binary.BigEndian.Uint64(b[:])
}

func (r *nonRing) add(k exKey, tok []byte, done func(error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent == nil {
		r.sent = make(map[exKey]nonSent)
	}
	if len(r.keys) < recentNONs {
		r.keys = append(r.keys, k)
	} else {
		delete(r.sent, r.keys[r.next])
		r.keys[r.next] = k
		r.next = (r.next + 1) % recentNONs
	}
	r.sent[k] = nonSent{done, tokenBits(tok)}
}

// take removes and returns the callback of a remembered NON.
func (r *nonRing) take(k exKey) func(error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sent[k]
	delete(r.sent, k)
	return s.done
}

// takeToken is take for a NON that must also carry tok.
func (r *nonRing) takeToken(k exKey, tok []byte) func(error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sent[k]
	if !ok || s.tok != tokenBits(tok) {
		return nil
	}
	delete(r.sent, k)
	return s.done
}

// sendNON sends a NON; with done set, an RST for it is reported.
func (e *Endpoint) sendNON(peer netip.AddrPort, mid uint16, data []byte, done func(error)) {
	if e.ctx.Err() != nil {
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	if done != nil {
		e.nons.add(exKey{peer, mid}, nonToken(data), done)
	}
	e.write(peer, data)
}

// nonToken is the token of an encoded message.
func nonToken(data []byte) []byte {
	if len(data) < 4 {
		return nil
	}
	return data[4:min(4+int(data[0]&0xf), len(data))]
}

// Observation is a client-side observation registered with Observe.
type Observation struct {
	e     *Endpoint
	peer  netip.AddrPort
	req   Message
	token [8]byte
	tk    tokKey
}

// Observe sends req with Observe=0 (RFC 7641 §3.1) and returns the first
// response. Later notifications are passed to notify on the endpoint's
// reader goroutine: notify must not block. If the first response carries
// no Observe option the server did not register the observation; the
// returned Observation is then already cancelled.
func (e *Endpoint) Observe(ctx context.Context, to netip.AddrPort, req *Message, notify func(*Message)) (*Message, *Observation, error) {
	o := &Observation{e: e, peer: to, req: *req}
	o.req.Options = append(Options(nil), req.Options...).SetUint(Observe, 0)
	tv := rand.Uint64()
	binary.BigEndian.PutUint64(o.token[:], tv)
	o.tk = tokKey{to, tv}
	c := &call{ch: make(chan callResult, 1), notify: notify}
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		return nil, nil, ErrClosed
	}
	e.calls[o.tk] = c
	e.peaks.calls = max(e.peaks.calls, len(e.calls))
	e.mu.Unlock()
	resp, err := e.exchange(ctx, to, &o.req, o.token[:], c)
	if err != nil || !resp.Options.Has(Observe) || !resp.Code.IsResponse() || resp.Code.Class() != 2 {
		o.forget()
		return resp, nil, err
	}
	return resp, o, nil
}

func (o *Observation) forget() {
	o.e.mu.Lock()
	delete(o.e.calls, o.tk)
	o.e.mu.Unlock()
}

// Forget ends the observation without a request: later notifications are
// rejected with RST (RFC 7641 §3.6). It is how an intermediary ends an
// OSCORE-protected observation, whose cancellation it cannot make (RFC
// 8613 §4.1.3.5.1): resending the client's registration with Observe=1
// would be a replay the server's protection refuses. It never fails; ctx
// is there to match Cancel.
func (o *Observation) Forget(context.Context) error {
	o.forget()
	return nil
}

// Cancel ends the observation: later notifications are rejected with RST,
// and a GET with Observe=1 and the same token deregisters it at once
// (RFC 7641 §3.6). ctx bounds the wait for that exchange.
func (o *Observation) Cancel(ctx context.Context) error {
	o.forget()
	req := o.req
	req.Options = append(Options(nil), o.req.Options...).SetUint(Observe, 1)
	c := &call{ch: make(chan callResult, 1), deregister: true}
	o.e.mu.Lock()
	if o.e.ctx.Err() != nil {
		o.e.mu.Unlock()
		return ErrClosed
	}
	o.e.calls[o.tk] = c
	o.e.peaks.calls = max(o.e.peaks.calls, len(o.e.calls))
	o.e.mu.Unlock()
	defer o.forget()
	_, err := o.e.exchange(ctx, o.peer, &req, o.token[:], c)
	return err
}
