package sixlowpan

import "errors"

// Errors callers branch on; returned errors wrap them with detail.
var (
	ErrTruncated   = errors.New("sixlowpan: truncated")
	ErrMalformed   = errors.New("sixlowpan: malformed")
	ErrUnsupported = errors.New("sixlowpan: unsupported encoding")
	ErrContext     = errors.New("sixlowpan: unknown context")
	ErrTooLarge    = errors.New("sixlowpan: datagram too large")
	ErrFrameSmall  = errors.New("sixlowpan: frame payload too small")
	ErrNotIPv6     = errors.New("sixlowpan: not an IPv6 address")
	ErrNotUDP      = errors.New("sixlowpan: not UDP")
	ErrChecksum    = errors.New("sixlowpan: bad UDP checksum")
	ErrDropped     = errors.New("sixlowpan: reassembly dropped")
)
