package coap

import (
	"context"
	"fmt"
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
	// Close frees the batch's buffers once its goroutine has stopped
	// reading: the bytes Datagram returned are gone with them.
	Close() error
}

// ICMPReport is the network's report that a datagram sent earlier did not
// reach its destination: an ICMP or ICMPv6 destination unreachable or
// parameter problem (RFC 7252 §4.2: host, network, port or protocol
// unreachable and parameter problem errors may fail an exchange, after
// vetting).
type ICMPReport struct {
	To  netip.AddrPort // the datagram's destination
	Err error          // what the report stands for: ECONNREFUSED for a closed port, EHOSTUNREACH, ...
	// Quote is the start of the datagram as the report quoted it, for the
	// message layer to check it against what it sent: header, token and
	// more where the report has them. It is valid until the next read.
	Quote []byte
}

// ICMPError is what a read returns, instead of datagrams, when the
// network reported datagrams sent from the transport undelivered (on
// Linux, UDP sockets ask for the reports with IP_RECVERR and
// IPV6_RECVERR). Reports may be empty: the network said something the
// transport could not attribute. Either way the reader reads on at once.
type ICMPError struct {
	Reports []ICMPReport
}

func (e *ICMPError) Error() string {
	if len(e.Reports) == 0 {
		return "coap: ICMP error"
	}
	return fmt.Sprintf("coap: ICMP error: %v: %v (and %d more)", e.Reports[0].To, e.Reports[0].Err, len(e.Reports)-1)
}
