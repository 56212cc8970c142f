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

// PeerIdentifier is a Transport that authenticates its peers (DTLS): the
// endpoint puts PeerIdentity of a request's sender in Request.Identity.
// It names the peer that holds the session with addr when it is asked, in
// the form Request.Identity documents, or "" for none.
type PeerIdentifier interface {
	PeerIdentity(addr netip.AddrPort) string
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

// BatchReader is a Transport that can read several datagrams with one
// system call (recvmmsg on Linux). Under load most reads then find more
// than one datagram waiting, and the reader sleeps and wakes once for
// all of them.
type BatchReader interface {
	// NewBatch returns a reader of up to n datagrams at a time for one
	// goroutine, or an error where the platform has no such call.
	NewBatch(n int) (Batch, error)
}

// Batch reads datagrams in groups; it belongs to one goroutine.
type Batch interface {
	// Read blocks until at least one datagram has arrived, or the
	// transport is closed, and returns how many it read.
	Read() (int, error)
	// Datagram is the i-th datagram of the last Read and its sender; the
	// bytes are overwritten by the next Read. A datagram that did not fit
	// is reported with truncated set.
	Datagram(i int) (b []byte, from netip.AddrPort, truncated bool)
}
