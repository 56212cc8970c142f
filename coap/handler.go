package coap

import (
	"context"
	"errors"
	"net/netip"
)

// The stage contract. A Handler is one stage of a request chain: it
// answers the request through its ResponseWriter, or passes it, perhaps
// changed, to the next stage. Everything a stage may rely on, and
// everything it owes the stages around it, is written here.
//
// What ServeCoAP returns:
//
//   - nil: the request is answered, or deliberately left unanswered (as
//     No-Response asks, RFC 7967).
//   - ErrLater, through Later: the answer comes after ServeCoAP returned,
//     from another goroutine: at most one response written to w, then
//     exactly one Finish(w, err), which ends the request for every stage.
//   - any other error: the request is not answered; whoever runs the chain
//     answers with the error's *Error code, or 5.00 for any other error.
//
// A stage that passes the request on returns what next returned, ErrLater
// as it is, unless it answered itself.
//
// What a stage does with w:
//
//   - It writes at most one response; the writer sets token, message ID
//     and type, and a second write gets ErrAnswered. Once written, the
//     response is the writer's to read until the call returns; the caller
//     may reuse it after, except what it hands over with WriteOwned.
//   - A stage that sees or changes what later stages write (a counter, a
//     limit, a cache that keeps the response) hands them WrapWriter(w, x),
//     never a writer of its own making: the wrapper keeps w's optional
//     capabilities below, which later stages find by type assertion, and
//     assert only with the two-value form.
//   - A writer outlives the request only as a NotifyWriter that an Observe
//     hub keeps for notifications.
//
// What ctx carries: cancellation, and the execution mode, which only the
// endpoint sets (or a transport outside this package, through a Runner):
//
//   - Inline(ctx): the stage runs on an endpoint's (or a stream
//     connection's) reader goroutine and must not block; what needs
//     waiting it answers through Later.
//   - Later(ctx, start): ErrLater, with start run once the whole chain has
//     returned, so that every stage has set up what it does with the
//     answer before the exchange that produces it begins.
//   - Detached(ctx): for work that goes on after the stage returned (a
//     goroutine of its own, an answer's continuation), which may block.
//
// Nothing else: a value one stage hands the stages after it is a field of
// the Request (Observer, Sealed), where a reader of the stage sees it.
//
// The request: r and r.Msg are the chain's. A stage may rewrite the
// message before it passes it on, in place or as a copy; never after the
// next stage has seen it, which may keep it.

// Request is a request as a Handler sees it.
type Request struct {
	Msg  *Message
	Peer netip.AddrPort // the client: UDP source, DTLS peer, radio node
	// Secure reports that the request arrived over a secured transport
	// (DTLS): the coaps scheme, which RFC 7252 §11.2 keeps apart from coap
	// in caching.
	Secure bool
	// Identity is the client's authenticated identity on a secured
	// transport: "psk:" and the DTLS PSK identity it used, or "cn:" and
	// the subject common name of the certificate the transport verified;
	// empty when the transport authenticates no one (PeerIdentifier).
	Identity string
	// Observer, set by an Observe hub on the registration it passes on,
	// asks the stage that reaches the origin to register the observation
	// there (RFC 7641 §3.1) and report to Observer, rather than make a
	// one-shot exchange. Notifications then go to Observer, not through
	// the writer.
	Observer Observer
	// Sealed, set by the proxy's guard on an OSCORE request (RFC 8613),
	// is the request as the guard received it. From there on stages read
	// and rewrite only the outer options an intermediary may change
	// (§4.1), and the stage that sends the request on checks its message
	// against Sealed first.
	Sealed *Message
	// Conn, when not 0, names the stream connection (RFC 8323: TCP, TLS,
	// WebSockets) the request came on, unique in the process: tokens are
	// scoped to a connection (§3.3), so it, not the peer's address and
	// port alone, tells clients apart; and its handshake verified the
	// client's address. 0 for datagrams (UDP, DTLS, radio).
	Conn uint64
}

// Observer is the end of an upstream observation that a hub serves its
// observers from (RFC 7641 §5); see Request.Observer.
type Observer interface {
	// Notify receives every notification after the first response. It
	// runs on a transport's reader goroutine and must not block.
	Notify(n *Message)
	// Started hands over the function that cancels the upstream
	// observation; it is called before the first response is written.
	Started(cancel func(ctx context.Context) error)
}

// Handler is one stage of a request chain; see the contract above.
type Handler interface {
	ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w ResponseWriter, r *Request) error

// ServeCoAP calls f.
func (f HandlerFunc) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	return f(ctx, w, r)
}

// ResponseWriter answers one request. The writer sets the token, message
// ID and type; a handler only gives code, options and payload. Only the
// first WriteResponse counts; later ones return ErrAnswered.
type ResponseWriter interface {
	WriteResponse(resp *Message) error
}

// Errors of the stage contract.
var (
	// ErrLater, returned by a handler through Later, says that the request
	// is answered later, from another goroutine: by one WriteResponse and
	// then Finish, or by Finish alone with the error the handler would
	// have returned. Until the answer comes, a CON request gets its empty
	// ACK after AckDelay, as for a slow handler (§5.2.2).
	ErrLater = errors.New("coap: the answer follows later")
	// ErrAnswered is returned by a second write for one request.
	ErrAnswered = errors.New("coap: request already answered")
	// ErrSeparate is returned by WritePrompt when the response would go as
	// a separate response: the CON request was acknowledged with an empty
	// ACK before the answer came (§5.2.2).
	ErrSeparate = errors.New("coap: the answer would be a separate response")
)

// The optional capabilities of a writer: each a small interface, found by
// a two-value type assertion. The endpoint's writers have them all but
// OwnedWriter; WrapWriter keeps those of the writer it wraps.

// NotifyWriter is the ResponseWriter of a request that can be observed
// (RFC 7641): after the first response, notifications go to the same
// client with the same token. The writer stays usable after the handler
// returns; an Observe hub keeps it for as long as the observer stays.
type NotifyWriter interface {
	ResponseWriter
	// Notify sends a notification with the request's token and a new
	// message ID, CON when con is set. done, if not nil, learns the
	// outcome: for a CON it is called once, with nil when acknowledged,
	// ErrReset when the client rejected it (it is no longer interested,
	// §3.6), ErrTimeout when it went unacknowledged (§4.5) or
	// ErrUnreachable when the network reported the client unreachable
	// (RFC 7252 §4.2); for a NON it is called only if the client rejects
	// it with RST, or the network reports it undelivered, while the
	// endpoint still remembers the message ID (the last recentNONs NONs
	// sent).
	// resp is the caller's again once Notify returns: it is encoded, not
	// kept.
	Notify(resp *Message, con bool, done func(error)) error
	// Peer is the observer's address.
	Peer() netip.AddrPort
	// Token is the observation's token.
	Token() []byte
}

// PromptWriter is a ResponseWriter that can send a response only if it
// goes at once as the answer: piggybacked in the ACK of a CON request, or
// as a NON. A separate response is a CON, retransmitted until
// acknowledged; to an address nobody has verified that multiplies what an
// attacker who forged the address gets sent there, and RFC 9175 §2.4 item
// 3 forbids it for an Echo challenge.
type PromptWriter interface {
	ResponseWriter
	// WritePrompt is WriteResponse, except that it sends nothing and
	// returns ErrSeparate when the answer would be a separate response.
	// The request is then still unanswered.
	WritePrompt(resp *Message) error
}

// Finisher is a ResponseWriter that can end a request answered later
// (ErrLater) with an error: it answers as the endpoint answers a handler's
// error, or, for a nil error, leaves the request unanswered as a handler
// returning nil does.
type Finisher interface {
	Finish(err error)
}

// OwnedWriter is a ResponseWriter that can keep the response itself rather
// than a copy, when the caller hands the message over: it neither changes
// nor reuses it after. A stage that keeps responses (the cache) spares a
// copy of every forwarded response this way.
type OwnedWriter interface {
	WriteOwned(resp *Message) error
}

// CodeReporter is a ResponseWriter that can tell the code it answered with
// (Empty while unanswered).
type CodeReporter interface {
	Code() Code
}

// WriteOwned writes resp, which the caller hands over, through w: by
// WriteOwned when w is an OwnedWriter, else by WriteResponse.
func WriteOwned(w ResponseWriter, resp *Message) error {
	if o, ok := w.(OwnedWriter); ok {
		return o.WriteOwned(resp)
	}
	return w.WriteResponse(resp)
}

// WritePrompt writes resp through w only if it goes at once: by
// WritePrompt when w is a PromptWriter, else by WriteResponse, since a
// writer that is not one never makes a separate response.
func WritePrompt(w ResponseWriter, resp *Message) error {
	if p, ok := w.(PromptWriter); ok {
		return p.WritePrompt(resp)
	}
	return w.WriteResponse(resp)
}

// Finish ends a request answered later: w.Finish when w is a Finisher;
// otherwise an error is written as its response.
func Finish(w ResponseWriter, err error) {
	if f, ok := w.(Finisher); ok {
		f.Finish(err)
		return
	}
	if err != nil && !errors.Is(err, ErrLater) {
		w.WriteResponse(errorResponse(err))
	}
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
// handler returns. Outside an endpoint or a Runner, start runs at once.
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
