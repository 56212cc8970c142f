// Package wire converts between gatewayd's types and the plugin protocol's
// messages, for both ends: CoAP messages as their encoded bytes, errors as
// Failures, radio errors as RadioError codes. Nothing here trusts the bytes
// it is given.
package wire

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
	"github.com/opaque-edge/gatewayd/radio"
)

// MaxMessage bounds an encoded CoAP message on the wire. The largest is a
// whole representation the host assembled from RFC 7959 blocks, up to a
// plugin's max_body (at most 4 MiB), plus room for its header and
// options.
const MaxMessage = 4<<20 + 64<<10

// ErrBadMessage is wrapped by errors about bytes that are no CoAP message.
var ErrBadMessage = errors.New("bad coap message")

// Encode returns m's encoding.
func Encode(m *coap.Message) ([]byte, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil message", ErrBadMessage)
	}
	b, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return b, nil
}

// Decode parses b. The message aliases b, which the caller hands over.
func Decode(b []byte) (*coap.Message, error) {
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(b))
	}
	m := new(coap.Message)
	if err := m.Decode(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return m, nil
}

// Failure turns err into its wire form; nil for nil.
func Failure(err error) *pb.Failure {
	if err == nil {
		return nil
	}
	f := &pb.Failure{Text: err.Error(), MaxAge: -1}
	var ce *coap.Error
	if errors.As(err, &ce) {
		f.Code = uint32(ce.Code)
		f.Diagnostic = ce.Diagnostic
		f.MaxAge = int32(ce.MaxAge)
	}
	var tl *blockwise.TooLargeError
	if errors.As(err, &tl) {
		f.TooLarge = &pb.TooLarge{Size: uint64(max(tl.Size, 0)), Max: uint64(max(tl.Max, 0)), Request: tl.Request}
	}
	return f
}

// Error turns a wire Failure back into an error: a *coap.Error when it
// carries a response code, wrapping a *blockwise.TooLargeError when it
// says so; nil for nil.
func Error(f *pb.Failure) error {
	if f == nil {
		return nil
	}
	var cause error
	if t := f.GetTooLarge(); t != nil {
		cause = &blockwise.TooLargeError{Size: clamp(t.GetSize()), Max: clamp(t.GetMax()), Request: t.GetRequest()}
	}
	if f.Code != 0 {
		c := coap.Code(f.Code)
		if f.Code > 0xff || !c.IsResponse() {
			return fmt.Errorf("%w: failure code %d is no response code", ErrBadMessage, f.Code)
		}
		maxAge := int(f.MaxAge)
		if maxAge < -1 {
			maxAge = -1
		}
		return &coap.Error{Code: c, Diagnostic: clip(f.Diagnostic), MaxAge: maxAge, Err: cause}
	}
	if cause != nil {
		return fmt.Errorf("%s: %w", clip(f.Text), cause)
	}
	return errors.New(clip(f.Text))
}

// clamp keeps a peer's size within int64.
func clamp(v uint64) int64 {
	return int64(min(v, 1<<62))
}

// clip bounds text a peer chose before it reaches logs and clients.
func clip(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// RadioError returns the wire code of a Link error.
func RadioError(err error) (pb.RadioError, string) {
	switch {
	case err == nil:
		return pb.RadioError_RADIO_ERROR_NONE, ""
	case errors.Is(err, radio.ErrNoAck):
		return pb.RadioError_RADIO_ERROR_NO_ACK, err.Error()
	case errors.Is(err, radio.ErrChannelBusy):
		return pb.RadioError_RADIO_ERROR_CHANNEL_BUSY, err.Error()
	case errors.Is(err, radio.ErrDown):
		return pb.RadioError_RADIO_ERROR_DOWN, err.Error()
	case errors.Is(err, radio.ErrClosed):
		return pb.RadioError_RADIO_ERROR_CLOSED, err.Error()
	case errors.Is(err, radio.ErrTooLong):
		return pb.RadioError_RADIO_ERROR_TOO_LONG, err.Error()
	}
	return pb.RadioError_RADIO_ERROR_OTHER, err.Error()
}

// LinkError turns a wire code back into the radio error callers branch
// on, wrapped with the peer's text.
func LinkError(code pb.RadioError, text string) error {
	var base error
	switch code {
	case pb.RadioError_RADIO_ERROR_NONE:
		return nil
	case pb.RadioError_RADIO_ERROR_NO_ACK:
		base = radio.ErrNoAck
	case pb.RadioError_RADIO_ERROR_CHANNEL_BUSY:
		base = radio.ErrChannelBusy
	case pb.RadioError_RADIO_ERROR_DOWN:
		base = radio.ErrDown
	case pb.RadioError_RADIO_ERROR_CLOSED:
		// The plugin's radio is closed; to this side that is a radio
		// that is down until the plugin restarts.
		base = radio.ErrDown
	case pb.RadioError_RADIO_ERROR_TOO_LONG:
		base = radio.ErrTooLong
	default:
		return errors.New(clip(text))
	}
	if text == "" || text == base.Error() {
		return base
	}
	return fmt.Errorf("%w: %s", base, clip(text))
}
