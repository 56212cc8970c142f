package coap

import (
	"context"
	"net/netip"
)

// Transport carries whole datagrams to and from peers named by IP address
// and port: a UDP socket, a DTLS listener, a radio.Conn, a plugin's stream.
// The message layer sits on a Transport and knows nothing else about it.
//
// ReadFrom blocks until a datagram arrives or the transport is closed; the
// owner of the reader goroutine ends it by calling Close. A datagram longer
// than b is truncated and reported with n == len(b).
//
// WriteTo sends one datagram. It may block (a radio waits for its tx-done);
// ctx bounds the wait. It does not keep b once it returns: the message
// layer reuses the buffers of what it sends only once.
type Transport interface {
	ReadFrom(b []byte) (n int, from netip.AddrPort, err error)
	WriteTo(ctx context.Context, b []byte, to netip.AddrPort) error
	Close() error
}

// Datagram is one datagram to send, for BatchWriter.
type Datagram struct {
	B  []byte
	To netip.AddrPort
}

// BatchWriter is a Transport that can send many datagrams with few system
// calls (sendmmsg on Linux): an Observe fan-out sends thousands at once.
// WriteBatch returns how many of ds it sent, in order.
type BatchWriter interface {
	WriteBatch(ctx context.Context, ds []Datagram) (int, error)
}
