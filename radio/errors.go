package radio

import (
	"errors"
	"fmt"
	"net"
)

// Errors a Link reports and callers branch on.
var (
	ErrNoAck       = errors.New("radio: no ack")         // acked frame not acknowledged after retries
	ErrChannelBusy = errors.New("radio: channel busy")   // CSMA/CA gave up (CCA failure)
	ErrDown        = errors.New("radio: down")           // the radio is not usable now; retry later
	ErrClosed      = errors.New("radio: link closed")    // Close was called
	ErrTooLong     = errors.New("radio: frame too long") // more than 125 bytes of MPDU (127-byte PSDU with FCS)
)

// Errors a Conn reports.
var (
	// ErrConnClosed is returned after Conn.Close. It matches net.ErrClosed,
	// as a closed socket's error does, so transport-agnostic readers stop.
	ErrConnClosed = fmt.Errorf("radio: conn closed: %w", net.ErrClosed)
	// ErrNoRoute means the destination is neither a neighbour nor an
	// address on the radio's prefix or link.
	ErrNoRoute = errors.New("radio: no route to node")
)
