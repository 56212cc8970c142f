package coap

import (
	"context"
	"errors"
)

// ErrLater, returned by a handler, says that the request is answered
// later, from another goroutine, through its ResponseWriter: by one
// WriteResponse, or by Finish with the error the handler would have
// returned. Every stage before it returns ErrLater as it is. Until the
// answer comes, a CON request gets its empty ACK after AckDelay, as for a
// slow handler (§5.2.2). Handlers return it through Later.
var ErrLater = errors.New("coap: the answer follows later")

// Finisher is a ResponseWriter that can end a request answered later with
// an error: it answers as the endpoint answers a handler's error (the
// *Error's code, else 5.00), or, for a nil error, leaves the request
// unanswered as a handler returning nil does. A stage that wraps a writer
// passes Finish on, after its own work.
type Finisher interface {
	Finish(err error)
}

// Finish ends a request answered later: w.Finish when w is a Finisher;
// otherwise an error is written as its response.
func Finish(w ResponseWriter, err error) {
	if f, ok := w.(Finisher); ok {
		f.Finish(err)
		return
	}
	if err != nil {
		w.WriteResponse(errorResponse(err))
	}
}

// errorResponse is the response for a handler's error: the *Error's, else
// 5.00.
func errorResponse(err error) *Message {
	var ce *Error
	if !errors.As(err, &ce) {
		ce = &Error{Code: InternalServerError, MaxAge: -1}
	}
	return ce.Response()
}

// laterKey is the context key of the running handler's laterState.
type laterKey struct{}

// laterState belongs to one goroutine that runs handlers, one request at a
// time: the endpoint's reader (inline) or a worker.
type laterState struct {
	inline bool     // the endpoint's reader: handlers must not block
	starts []func() // registered by Later, run when the handler returns
}

// run calls the functions Later registered, in order, and forgets them.
func (s *laterState) run() {
	for i, f := range s.starts {
		s.starts[i] = nil
		f()
	}
	s.starts = s.starts[:0]
}

// Inline reports whether the handler runs on the endpoint's reader
// goroutine (EndpointConfig.Inline): it must not block there, and answers
// what needs waiting through Later.
func Inline(ctx context.Context) bool {
	s, _ := ctx.Value(laterKey{}).(*laterState)
	return s != nil && s.inline
}

// Later returns ErrLater and has start run once the handler has returned
// to the endpoint: so every stage has set up what it does with the answer
// before the exchange that produces it begins. start runs on the goroutine
// that ran the handler and must not block (it may start goroutines); it
// must lead to one Finish on the request's writer, after the
// WriteResponse if there is an answer: Finish is what ends the request
// for every stage.
//
// Later must be called from the handler's own goroutine, before the
// handler returns. Outside an endpoint, start runs at once.
func Later(ctx context.Context, start func()) error {
	s, _ := ctx.Value(laterKey{}).(*laterState)
	if s == nil {
		start()
	} else {
		s.starts = append(s.starts, start)
	}
	return ErrLater
}

// Detached is ctx for work that goes on after the handler returned (in an
// answer's continuation or on a goroutine of its own): Inline reports
// false for it, so the stages it calls may block, and Later runs at once.
func Detached(ctx context.Context) context.Context {
	return context.WithValue(ctx, laterKey{}, (*laterState)(nil))
}
