package oscore

import (
	"errors"

	"github.com/opaque-edge/gatewayd/coap"
)

// ErrorResponse builds the unprotected error response §8.2 allows a server
// to send when verifying req failed with err: 4.02 "Failed to decode COSE"
// for ErrDecode, 4.01 "Security context not found" for ErrUnknownKID, 4.01
// "Replay detected" for ErrReplay (§7.4) and 4.00 "Decryption failed" for
// ErrDecrypt, each with an Outer Max-Age of 0 so that caches keep it out
// (§4.1.3.1). It reports false for other errors, which call for no OSCORE
// error response. A confirmable req gets a piggybacked ACK; otherwise the
// response is non-confirmable and the caller assigns its Message ID.
func ErrorResponse(req *coap.Message, err error) (*coap.Message, bool) {
	var code coap.Code
	var diag string
	switch {
	case errors.Is(err, ErrDecode):
		code, diag = coap.BadOption, "Failed to decode COSE"
	case errors.Is(err, ErrUnknownKID):
		code, diag = coap.Unauthorized, "Security context not found"
	case errors.Is(err, ErrReplay):
		code, diag = coap.Unauthorized, "Replay detected"
	case errors.Is(err, ErrDecrypt):
		code, diag = coap.BadRequest, "Decryption failed"
	default:
		return nil, false
	}
	resp := &coap.Message{
		Type:    coap.NonConfirmable,
		Code:    code,
		Token:   append([]byte(nil), req.Token...),
		Options: coap.Options{{ID: coap.MaxAge, Value: []byte{}}},
		Payload: []byte(diag),
	}
	if req.Type == coap.Confirmable {
		resp.Type, resp.MID = coap.Acknowledgement, req.MID
	}
	return resp, true
}
