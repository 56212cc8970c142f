// Package coap is the CoAP vocabulary every gatewayd package shares: the
// message and its codec (RFC 7252 §3), the option registry with its classes
// (critical, unsafe, NoCacheKey, OSCORE outer/inner), URI parsing and
// composition (§6), and the message layer (§4: CON/ACK/RST, deduplication,
// retransmission, token and message-ID allocation) over a datagram Transport.
//
// Options are kept as raw bytes in wire order, repeats and unknown numbers
// included, so a message decoded and encoded again is byte-identical: a
// forwarder of protected messages must not lose or reorder what it does not
// understand.
package coap
