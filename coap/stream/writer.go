package stream

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// writer answers one request of the peer, and notifies it when the
// request registered an observation: the NotifyWriter an Observe hub
// keeps.
type writer struct {
	c      *Conn
	tok    [coap.MaxTokenLen]byte
	tokLen uint8

	mu       sync.Mutex
	code     coap.Code // guarded by mu: of the response, Empty while unanswered
	answered bool      // guarded by mu
	later    bool      // guarded by mu: the handler returned ErrLater
	ended    bool      // guarded by mu
	// The request keeps its slot of MaxInflight until its response is
	// written, not merely queued: a peer that does not read is held back
	// by TCP at MaxInflight requests, as when writers waited.
	unsent bool // guarded by mu: the response is queued, not yet written
	endDue bool // guarded by mu: end waits for it
}

var (
	_ coap.NotifyWriter = (*writer)(nil)
	_ coap.StreamWriter = (*writer)(nil)
	_ coap.PromptWriter = (*writer)(nil)
	_ coap.Finisher     = (*writer)(nil)
	_ coap.CodeReporter = (*writer)(nil)
)

func (w *writer) token() []byte { return w.tok[:w.tokLen:w.tokLen] }

// Peer is the client's address.
func (w *writer) Peer() netip.AddrPort { return w.c.peer }

// Token is the request's token.
func (w *writer) Token() []byte { return w.token() }

// Context ends when the connection does, and with it the observations
// the connection held (RFC 8323 §7.4).
func (w *writer) Context() context.Context { return w.c.ctx }

// Code is the code the request was answered with.
func (w *writer) Code() coap.Code {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.code
}

func (w *writer) WriteResponse(resp *coap.Message) error {
	w.mu.Lock()
	if w.answered {
		w.mu.Unlock()
		return coap.ErrAnswered
	}
	w.answered, w.code = true, resp.Code
	ending := w.later
	w.mu.Unlock()
	out := *resp
	out.Token = w.token()
	err := w.send(&out, ending)
	if errors.Is(err, ErrTooBig) {
		// The client cannot take it (its CSM said so): an error it can.
		w.mu.Lock()
		w.code = coap.InternalServerError
		w.mu.Unlock()
		e := &coap.Message{Code: coap.InternalServerError, Token: w.token(), Payload: []byte("response over the client's Max-Message-Size")}
		err = w.send(e, ending)
	}
	if ending {
		w.end()
	}
	return err
}

// send queues the response. An answer that comes after the handler
// returned (later) may be written from an upstream socket's reader, which
// serves every client and must never wait for this one: over TCP it
// writes if the socket takes the frame at once, else, as over TLS and
// WebSockets, a goroutine writes it. A handler's own goroutine writes,
// and may wait.
func (w *writer) send(m *coap.Message, later bool) error {
	mode := sendBlock
	if st, ok := w.c.t.(*streamTransport); ok && st.raw != nil {
		mode = sendTry
	} else if later {
		mode = sendAsync
	}
	w.mu.Lock()
	w.unsent = true
	w.mu.Unlock()
	err := w.c.sendFrame(m, nil, w, mode)
	if err != nil {
		w.written(err) // not queued
	}
	return err
}

// written hears that the response went (or failed), and ends the request
// if end waited for it.
func (w *writer) written(error) {
	w.mu.Lock()
	w.unsent = false
	due := w.endDue
	w.mu.Unlock()
	if due {
		w.end()
	}
}

// answersLater records that the handler returned ErrLater: the response,
// when it comes, ends the request; one written already ends it now.
func (w *writer) answersLater() {
	w.mu.Lock()
	w.later = true
	end := w.answered
	w.mu.Unlock()
	if end {
		w.end()
	}
}

// WritePrompt is WriteResponse: over a stream every response goes at once
// (there are no separate responses to hold back).
func (w *writer) WritePrompt(resp *coap.Message) error { return w.WriteResponse(resp) }

// Finish ends the request: an error not yet answered is answered, the
// request's slot is freed. Only the first Finish counts.
func (w *writer) Finish(err error) {
	if err != nil && !errors.Is(err, coap.ErrLater) {
		w.mu.Lock()
		answered := w.answered
		w.mu.Unlock()
		if !answered {
			var ce *coap.Error
			if !errors.As(err, &ce) {
				w.c.log.Warn("handler failed", "peer", w.c.peer, "err", err)
				ce = &coap.Error{Code: coap.InternalServerError, MaxAge: -1}
			}
			w.WriteResponse(ce.Response())
		}
	}
	w.end()
}

func (w *writer) end() {
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return
	}
	if w.unsent {
		w.endDue = true
		w.mu.Unlock()
		return
	}
	w.ended = true
	w.mu.Unlock()
	w.c.requestDone()
}

// Notify sends a notification with the request's token. A stream has no
// CON or NON (RFC 8323 §7.2): con only says whether done hears of the
// notification written, which it does when con is set; without it done
// hears only of a failure. The connection's queue holds at most
// MaxBuffered bytes; an Observe hub that sets con for stream writers
// (StreamWriter) keeps one notification per observer in it, the newest
// waiting in the hub's latest-wins slot.
func (w *writer) Notify(resp *coap.Message, con bool, done func(error)) error {
	out := *resp
	out.Token = w.token()
	var d func(error)
	switch {
	case done == nil:
	case con:
		d = done
	default:
		d = func(err error) {
			if err != nil {
				done(err)
			}
		}
	}
	w.c.st.notifications.Add(1)
	return w.c.sendMsg(&out, d, false)
}
