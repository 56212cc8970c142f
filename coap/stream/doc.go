// Package stream is CoAP over reliable transports (RFC 8323): TCP, TLS
// and WebSockets. It frames messages (§3.2, §4.2), runs a connection's
// signalling (CSM, Ping and Pong, Release, Abort: §5), hands requests to
// a coap.Handler with writers that notify observers in order (§7), and
// sends requests of its own over connections it dials or accepts.
//
// It sits beside the datagram message layer (coap.Endpoint), not on it: a
// stream has no message types, message IDs, acknowledgements or
// deduplication (§3.3: TCP provides them), so nothing of that layer is
// used; the codec of package coap decodes everything after the header.
package stream
