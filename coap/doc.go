// Package coap is the CoAP vocabulary every gatewayd package shares: the
// message and its codec (RFC 7252 §3), the option registry with its classes
// (critical, unsafe, NoCacheKey, OSCORE outer/inner), URI parsing and
// composition (§6), and the message layer (§4: CON/ACK/RST, deduplication,
// retransmission, token and message-ID allocation) over a datagram Transport.
//
// A request chain is built of Handlers, each a stage that answers or
// passes the request on; the stage contract (what a stage returns, what it
// does with the writer, what the context carries) is written in one place,
// handler.go, and WrapWriter is the one way a stage wraps a writer.
//
// Options are kept as raw bytes in wire order, repeats and unknown numbers
// included, so a message decoded and encoded again is byte-identical: a
// forwarder of protected messages must not lose or reorder what it does not
// understand.
package coap
