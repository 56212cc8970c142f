package coap

import (
	"errors"
	"fmt"
)

// Errors of the message layer that callers branch on.
var (
	ErrTimeout = errors.New("coap: no response")   // CON retransmissions exhausted or the deadline passed
	ErrReset   = errors.New("coap: reset by peer") // the peer answered RST (§4.2)
	ErrClosed  = errors.New("coap: endpoint closed")
	ErrBusy    = errors.New("coap: too many exchanges in flight")
	// ErrUnreachable: the network reported the peer unreachable (ICMP,
	// vetted against what was sent, §4.2); the error also wraps the
	// report's own, e.g. ECONNREFUSED for a closed port.
	ErrUnreachable = errors.New("coap: destination unreachable")
)

// Error is a failure that maps to a CoAP response code: a handler that
// returns one (possibly wrapped) without having answered gets that code and
// the diagnostic payload (§5.5.2).
type Error struct {
	Code       Code
	Diagnostic string
	MaxAge     int // >= 0 sets Max-Age (e.g. a retry hint for 5.03); -1 leaves it out
	Err        error
}

// Errorf returns an *Error with a diagnostic message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Diagnostic: fmt.Sprintf(format, args...), MaxAge: -1}
}

func (e *Error) Error() string {
	s := fmt.Sprintf("coap: %v", e.Code)
	if e.Diagnostic != "" {
		s += ": " + e.Diagnostic
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Response builds the error response message.
func (e *Error) Response() *Message {
	m := &Message{Code: e.Code}
	if e.MaxAge >= 0 {
		m.Options = m.Options.SetUint(MaxAge, uint32(e.MaxAge))
	}
	if e.Diagnostic != "" {
		m.Payload = []byte(e.Diagnostic)
	}
	return m
}
