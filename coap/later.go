package coap

import (
	"context"
	"errors"
)

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

// Runner serves requests under the stage contract on one goroutine, one
// request at a time, for a transport outside this package (coap/stream)
// as the endpoint serves on its readers and workers: the functions Later
// registers wait until the whole chain has returned, and on a reader
// Inline reports true, so that the stages answer what needs waiting
// through Later instead of blocking.
type Runner struct {
	ctx context.Context
	s   *laterState
}

// NewRunner returns a runner whose handlers run under ctx; inline says
// that its goroutine is a transport's reader, which must not block.
func NewRunner(ctx context.Context, inline bool) *Runner {
	s := &laterState{inline: inline}
	return &Runner{ctx: context.WithValue(ctx, laterKey{}, s), s: s}
}

// Serve runs h for r. When it returns ErrLater, the caller marks the
// request as answered later (so that the answer, whenever it comes, ends
// it) and then calls Start; for any other result it calls Start before it
// ends the request, in case a stage called Later all the same.
func (n *Runner) Serve(h Handler, w ResponseWriter, r *Request) error {
	return h.ServeCoAP(n.ctx, w, r)
}

// Start runs, in order, the functions Later registered during the last
// Serve, and forgets them.
func (n *Runner) Start() { n.s.run() }
