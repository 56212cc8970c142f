package coap

import (
	"net/netip"
	"sync/atomic"
)

// Wrapper is a stage's part of a writer it wraps (WrapWriter): what the
// stage does with the responses later stages write, and with the end of
// the request. Embed PassWrite or PassFinish for the half a stage leaves
// alone.
type Wrapper interface {
	// Write handles a response written through the wrapped writer,
	// whichever way it was written: WriteResponse, WriteOwned or
	// WritePrompt. It writes resp, another response or none through
	// next.Write, which writes the way the caller asked. A wrapper that
	// keeps the response instead of writing it (a capture) returns nil
	// for it, and its stage writes it on.
	Write(next Next, resp *Message) error
	// Finish ends a request answered later (Finisher): it does the
	// wrapper's own work, then passes err, or another error, to
	// next.Finish; a capture may keep it instead.
	Finish(next Next, err error)
}

// PassWrite, embedded in a Wrapper, writes every response on unchanged.
type PassWrite struct{}

// Write writes resp through next.
func (PassWrite) Write(next Next, resp *Message) error { return next.Write(resp) }

// PassFinish, embedded in a Wrapper, passes Finish on unchanged.
type PassFinish struct{}

// Finish passes err to next.
func (PassFinish) Finish(next Next, err error) { next.Finish(err) }

// Next is the wrapped writer as one call through the wrapper reached it.
type Next struct {
	w    *wrapped
	mode writeMode
}

// writeMode is which method a response was written with.
type writeMode uint8

const (
	modeResponse writeMode = iota // WriteResponse
	modeOwned                     // WriteOwned: the caller hands resp over
	modePrompt                    // WritePrompt
)

// Write writes resp to the wrapped writer the way the caller wrote it
// to the wrapper. For WriteOwned what is passed is handed over too: resp,
// or a message made for it.
func (n Next) Write(resp *Message) error {
	var err error
	switch n.mode {
	case modeOwned:
		err = WriteOwned(n.w.w, resp)
	case modePrompt:
		err = WritePrompt(n.w.w, resp)
	default:
		err = n.w.w.WriteResponse(resp)
	}
	if err == nil && resp != nil {
		n.w.code.CompareAndSwap(0, uint32(resp.Code))
	}
	return err
}

// Owned reports whether the caller handed resp over (WriteOwned): a
// wrapper that keeps the response need not copy it then.
func (n Next) Owned() bool { return n.mode == modeOwned }

// Finish ends the request on the wrapped writer (Finish).
func (n Next) Finish(err error) { Finish(n.w.w, err) }

// Code is the code the wrapping writer reports (CodeReporter): the
// wrapped writer's, when it reports one, else that of the first response
// written through. It lets a wrapper read it without keeping the writer.
func (n Next) Code() Code { return n.w.Code() }

// Writer is the wrapped writer itself, for a wrapper that writes to it in
// its own way (WritePrompt) or outside a call (from a timer).
func (n Next) Writer() ResponseWriter { return n.w.w }

// WrapWriter returns a writer that is w with x in front: every response
// written to it goes through x.Write, and Finish through x.Finish. It has
// exactly the optional capabilities of w that later stages look for:
// NotifyWriter and PromptWriter when w has them; and it is a Finisher, an
// OwnedWriter and a CodeReporter (w's code when w reports one, else that
// of the first response written through it).
//
// Notifications, Peer and Token go to w unchanged: a stage that must see
// the notifications of its requests is an Observe hub, which keeps the
// writers itself, not a wrapper.
func WrapWriter(w ResponseWriter, x Wrapper) ResponseWriter {
	_, notify := w.(NotifyWriter)
	_, prompt := w.(PromptWriter)
	switch {
	case notify && prompt:
		return &notifyPromptWrapped{wrapped{w: w, x: x}}
	case notify:
		return &notifyWrapped{wrapped{w: w, x: x}}
	case prompt:
		return &promptWrapped{wrapped{w: w, x: x}}
	}
	return &wrapped{w: w, x: x}
}

// WrapWriterWith is WrapWriter for a stage in front of every request: the
// writer and its Wrapper, an X, are made in one allocation rather than
// two. It returns the writer and the Wrapper, zero, for the stage to set
// before it hands the writer on.
func WrapWriterWith[X any, PX interface {
	*X
	Wrapper
}](w ResponseWriter) (ResponseWriter, PX) {
	_, notify := w.(NotifyWriter)
	_, prompt := w.(PromptWriter)
	switch {
	case notify && prompt:
		o := &struct {
			notifyPromptWrapped
			x X
		}{}
		o.notifyPromptWrapped = notifyPromptWrapped{wrapped{w: w, x: PX(&o.x)}}
		return &o.notifyPromptWrapped, PX(&o.x)
	case notify:
		o := &struct {
			notifyWrapped
			x X
		}{}
		o.notifyWrapped = notifyWrapped{wrapped{w: w, x: PX(&o.x)}}
		return &o.notifyWrapped, PX(&o.x)
	case prompt:
		o := &struct {
			promptWrapped
			x X
		}{}
		o.promptWrapped = promptWrapped{wrapped{w: w, x: PX(&o.x)}}
		return &o.promptWrapped, PX(&o.x)
	}
	o := &struct {
		wrapped
		x X
	}{}
	o.wrapped = wrapped{w: w, x: PX(&o.x)}
	return &o.wrapped, PX(&o.x)
}

// WrapperOf returns the Wrapper of type T that w, or a writer w wraps,
// was made with: how a stage finds what an earlier one put in front of
// the writer (an answer's size limit).
func WrapperOf[T Wrapper](w ResponseWriter) (T, bool) {
	for {
		u, ok := w.(unwrapper)
		if !ok {
			var zero T
			return zero, false
		}
		ww := u.wrapper()
		if x, ok := ww.x.(T); ok {
			return x, true
		}
		w = ww.w
	}
}

// unwrapper is every writer WrapWriter makes.
type unwrapper interface{ wrapper() *wrapped }

// unwrap is the writer below every wrapper of w: the endpoint's writer of
// a request, for NotifyAll, which notifications reach unchanged.
func unwrap(w ResponseWriter) ResponseWriter {
	for {
		u, ok := w.(unwrapper)
		if !ok {
			return w
		}
		w = u.wrapper().w
	}
}

// wrapped is WrapWriter's writer for a w that can neither notify nor
// prompt; the types below add those.
type wrapped struct {
	w    ResponseWriter
	x    Wrapper
	code atomic.Uint32 // of the first response written through to w
}

var (
	_ Finisher     = (*wrapped)(nil)
	_ OwnedWriter  = (*wrapped)(nil)
	_ CodeReporter = (*wrapped)(nil)
	_ NotifyWriter = (*notifyWrapped)(nil)
	_ PromptWriter = (*promptWrapped)(nil)
	_ NotifyWriter = (*notifyPromptWrapped)(nil)
	_ PromptWriter = (*notifyPromptWrapped)(nil)
)

func (w *wrapped) wrapper() *wrapped { return w }

func (w *wrapped) WriteResponse(resp *Message) error {
	return w.x.Write(Next{w, modeResponse}, resp)
}

func (w *wrapped) WriteOwned(resp *Message) error {
	return w.x.Write(Next{w, modeOwned}, resp)
}

func (w *wrapped) Finish(err error) { w.x.Finish(Next{w, modeResponse}, err) }

func (w *wrapped) Code() Code {
	if cr, ok := w.w.(CodeReporter); ok {
		return cr.Code()
	}
	return Code(w.code.Load())
}

// notifyWrapped is made only for a w that is a NotifyWriter, and asserts
// it again at each call rather than keep a second interface value: the
// stages in front of every request wrap the endpoint's writer, and 16
// bytes more put the writer in a larger size class, while the calls are
// few (a registration's writer is kept by the hub, not wrapped).
type notifyWrapped struct{ wrapped }

func (w *notifyWrapped) Notify(resp *Message, con bool, done func(error)) error {
	return w.w.(NotifyWriter).Notify(resp, con, done)
}
func (w *notifyWrapped) Peer() netip.AddrPort { return w.w.(NotifyWriter).Peer() }
func (w *notifyWrapped) Token() []byte        { return w.w.(NotifyWriter).Token() }

type promptWrapped struct{ wrapped }

func (w *promptWrapped) WritePrompt(resp *Message) error {
	return w.x.Write(Next{&w.wrapped, modePrompt}, resp)
}

// notifyPromptWrapped asserts its w as notifyWrapped does.
type notifyPromptWrapped struct{ wrapped }

func (w *notifyPromptWrapped) Notify(resp *Message, con bool, done func(error)) error {
	return w.w.(NotifyWriter).Notify(resp, con, done)
}
func (w *notifyPromptWrapped) Peer() netip.AddrPort { return w.w.(NotifyWriter).Peer() }
func (w *notifyPromptWrapped) Token() []byte        { return w.w.(NotifyWriter).Token() }

func (w *notifyPromptWrapped) WritePrompt(resp *Message) error {
	return w.x.Write(Next{&w.wrapped, modePrompt}, resp)
}
