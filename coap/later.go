package coap

import "errors"

// errorResponse is the response for a handler's error: the *Error's, else
// 5.00.
func errorResponse(err error) *Message {
	var ce *Error
	if !errors.As(err, &ce) {
		ce = &Error{Code: InternalServerError, MaxAge: -1}
	}
	return ce.Response()
}

// laterKey is the context key of the running handler's laterState: the
// execution mode of the stage contract (Inline, Later, Detached).
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
