package coap

import (
	"context"
	"net/netip"
)

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
	// Conn, when not 0, names the stream connection (RFC 8323: TCP, TLS,
	// WebSockets) the request came on, unique in the process: tokens are
	// scoped to a connection (§3.3), so it, not the peer's address and
	// port alone, tells clients apart; and its handshake verified the
	// client's address. 0 for datagrams (UDP, DTLS, radio).
	Conn uint64
}

// ResponseWriter answers one request. The writer sets the token, message
// ID and type; a handler only gives code, options and payload. Only the
// first WriteResponse counts; later ones return ErrAnswered.
type ResponseWriter interface {
	WriteResponse(resp *Message) error
}

// OwnedWriter is a ResponseWriter that can keep the response itself rather
// than a copy, when the caller hands the message over: it neither changes
// nor reuses it after. A stage that keeps responses (the cache) spares a
// copy of every forwarded response this way.
type OwnedWriter interface {
	WriteOwned(resp *Message) error
}

// WriteOwned writes resp, which the caller hands over, through w: by
// WriteOwned when w is an OwnedWriter, else by WriteResponse.
func WriteOwned(w ResponseWriter, resp *Message) error {
	if o, ok := w.(OwnedWriter); ok {
		return o.WriteOwned(resp)
	}
	return w.WriteResponse(resp)
}

// Handler is one stage of a request chain. A stage either answers through
// w, or passes the request on to the next stage. It returns nil when the
// request was answered (or deliberately left unanswered, as No-Response
// asks); an error when it was not: the endpoint then answers with the
// error's *Error code, or 5.00 for any other error.
type Handler interface {
	ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w ResponseWriter, r *Request) error

// ServeCoAP calls f.
func (f HandlerFunc) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	return f(ctx, w, r)
}

// CodeReporter is a ResponseWriter that can tell the code it answered with
// (Empty while unanswered): the endpoint's writers are.
type CodeReporter interface {
	Code() Code
}
