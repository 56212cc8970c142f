// Package coaptest helps test the stages of a CoAP request chain: a
// Recorder that stands for the client's writer and keeps what a stage
// wrote, and Serve, which runs a stage on one request the way an endpoint
// ends it (the stage contract of coap/handler.go).
package coaptest

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Recorder is a ResponseWriter that keeps what is written to it: the
// first response, the notifications, and how the request ended. It has
// the capabilities of an endpoint's writer: NotifyWriter, PromptWriter,
// Finisher and CodeReporter; Plain hides them. It is safe for concurrent
// use: a stage may answer from another goroutine.
type Recorder struct {
	peer  netip.AddrPort
	token []byte

	mu      sync.Mutex
	acked   bool            // guarded by mu: WritePrompt refuses (SetAcked)
	resp    *coap.Message   // guarded by mu: the first response
	writes  int             // guarded by mu: writes tried, the refused ones included
	notes   []*coap.Message // guarded by mu: notifications, in order
	dones   []func(error)   // guarded by mu: CON notifications' outcome callbacks
	ends    int             // guarded by mu: Finish calls
	err     error           // guarded by mu: the error the request ended with
	ended   chan struct{}   // closed by the first end
	changed chan struct{}   // closed and replaced at every change
}

var (
	_ coap.NotifyWriter = (*Recorder)(nil)
	_ coap.PromptWriter = (*Recorder)(nil)
	_ coap.Finisher     = (*Recorder)(nil)
	_ coap.CodeReporter = (*Recorder)(nil)
)

// NewRecorder returns a Recorder for r: its Peer and Token are r's.
func NewRecorder(r *coap.Request) *Recorder {
	rec := &Recorder{ended: make(chan struct{}), changed: make(chan struct{})}
	if r != nil {
		rec.peer = r.Peer
		if r.Msg != nil {
			rec.token = append([]byte(nil), r.Msg.Token...)
		}
	}
	return rec
}

// changedLocked wakes whoever waits for a change; r.mu is held.
func (r *Recorder) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// WriteResponse keeps a copy of the first response; later ones get
// coap.ErrAnswered.
func (r *Recorder) WriteResponse(m *coap.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.resp != nil {
		return coap.ErrAnswered
	}
	r.resp = m.Clone()
	r.changedLocked()
	return nil
}

// SetAcked makes the recorder stand for a CON request that has had its
// empty ACK: WritePrompt then refuses with coap.ErrSeparate.
func (r *Recorder) SetAcked() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acked = true
}

// WritePrompt is WriteResponse, or coap.ErrSeparate after SetAcked.
func (r *Recorder) WritePrompt(m *coap.Message) error {
	r.mu.Lock()
	acked := r.acked
	r.mu.Unlock()
	if acked {
		return coap.ErrSeparate
	}
	return r.WriteResponse(m)
}

// Notify keeps a copy of a notification. A CON's done is kept for
// AckNotifications; a NON's is never called, as for a client that
// rejects nothing.
func (r *Recorder) Notify(m *coap.Message, con bool, done func(error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, m.Clone())
	if con && done != nil {
		r.dones = append(r.dones, done)
	}
	r.changedLocked()
	return nil
}

// AckNotifications calls, with err, the outcome callbacks of the CON
// notifications not yet settled: nil for acknowledged, coap.ErrReset for
// rejected.
func (r *Recorder) AckNotifications(err error) {
	r.mu.Lock()
	dones := r.dones
	r.dones = nil
	r.mu.Unlock()
	for _, d := range dones {
		d(err)
	}
}

// Peer is the request's client.
func (r *Recorder) Peer() netip.AddrPort { return r.peer }

// Token is the request's token.
func (r *Recorder) Token() []byte { return r.token }

// Finish ends the request as an endpoint's writer does: an error not yet
// answered is answered with its code. Every call is counted (Finishes).
func (r *Recorder) Finish(err error) {
	r.mu.Lock()
	r.ends++
	first := r.ends == 1
	r.mu.Unlock()
	if first {
		r.end(err)
	}
}

// end records how the request ended, answering an error.
func (r *Recorder) end(err error) {
	if err != nil && !errors.Is(err, coap.ErrLater) {
		var ce *coap.Error
		if !errors.As(err, &ce) {
			ce = &coap.Error{Code: coap.InternalServerError, MaxAge: -1}
		}
		r.WriteResponse(ce.Response())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.ended:
		return
	default:
	}
	r.err = err
	close(r.ended)
	r.changedLocked()
}

// Code is the code of the first response, coap.Empty while none.
func (r *Recorder) Code() coap.Code {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resp == nil {
		return coap.Empty
	}
	return r.resp.Code
}

// Msg is the first response, nil while none.
func (r *Recorder) Msg() *coap.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resp
}

// Writes is how many writes were tried, the refused included.
func (r *Recorder) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// Notifications are the notifications so far, in order.
func (r *Recorder) Notifications() []*coap.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*coap.Message(nil), r.notes...)
}

// Finishes is how many times Finish was called.
func (r *Recorder) Finishes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ends
}

// Ended is closed once the request has ended (Serve, Finish).
func (r *Recorder) Ended() <-chan struct{} { return r.ended }

// Err is the error the request ended with: the stage's, or Finish's.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// WaitFor waits until cond, called with the recorder, holds, failing t
// after 10 s: a stage may answer or notify from another goroutine.
func (r *Recorder) WaitFor(t testing.TB, what string, cond func(*Recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond(r) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("coaptest: waited 10 s for %s", what)
		}
	}
}

// Plain is the recorder as a writer that can neither notify nor prompt:
// the writer of a transport that has neither (a plugin's request).
func (r *Recorder) Plain() coap.ResponseWriter { return plain{r} }

type plain struct{ r *Recorder }

var (
	_ coap.Finisher     = plain{}
	_ coap.CodeReporter = plain{}
)

func (p plain) WriteResponse(m *coap.Message) error { return p.r.WriteResponse(m) }
func (p plain) Finish(err error)                    { p.r.Finish(err) }
func (p plain) Code() coap.Code                     { return p.r.Code() }

// Serve runs h on r with a new Recorder as the writer, and ends the
// request as an endpoint does: an error h returns is answered with its
// code; a request h answers later (coap.ErrLater) ends with its Finish,
// which Serve waits for, failing t after 10 s. Outside an endpoint,
// coap.Later starts the answer at once and coap.Inline is false.
func Serve(t testing.TB, h coap.Handler, r *coap.Request) *Recorder {
	t.Helper()
	rec := NewRecorder(r)
	ServeWith(t, h, rec, rec, r)
	return rec
}

// ServeWith is Serve with w for the writer, rec keeping what reaches it
// (w is rec, rec.Plain(), or a writer wrapping rec).
func ServeWith(t testing.TB, h coap.Handler, w coap.ResponseWriter, rec *Recorder, r *coap.Request) {
	t.Helper()
	err := h.ServeCoAP(context.Background(), w, r)
	if errors.Is(err, coap.ErrLater) {
		select {
		case <-rec.Ended():
		case <-time.After(10 * time.Second):
			t.Fatal("coaptest: the handler returned ErrLater and did not Finish within 10 s")
		}
		return
	}
	rec.end(err)
}
