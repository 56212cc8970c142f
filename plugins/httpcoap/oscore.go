package httpcoap

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// HeaderOSCORE is the HTTP header field of RFC 8613 §11.1.
const HeaderOSCORE = "OSCORE"

// ErrOSCOREHeader reports an OSCORE header field value that is not
// base64url without padding, or too long for the CoAP option.
var ErrOSCOREHeader = errors.New("http: bad OSCORE header field")

// maxOSCOREOption is the longest OSCORE option value (RFC 8613 §2).
const maxOSCOREOption = 255

// EncodeOSCORE renders a CoAP OSCORE option value as the HTTP OSCORE
// header field value (RFC 8613 §11.2): "AA" for the empty value, else
// base64url without padding.
func EncodeOSCORE(opt []byte) string {
	if len(opt) == 0 {
		return "AA"
	}
	return base64.RawURLEncoding.EncodeToString(opt)
}

// DecodeOSCORE is the inverse of EncodeOSCORE (RFC 8613 §11.3): the
// single zero byte "AA" is the empty option value.
func DecodeOSCORE(field string) ([]byte, error) {
	if len(field) < 2 {
		// §11.1 ABNF: OSCORE = 2*base64url-char.
		return nil, fmt.Errorf("%w: %q is shorter than 2 characters", ErrOSCOREHeader, field)
	}
	if len(field) > base64.RawURLEncoding.EncodedLen(maxOSCOREOption) {
		return nil, fmt.Errorf("%w: %d characters", ErrOSCOREHeader, len(field))
	}
	// Strict: padding, "+" and "/" are not base64url-char.
	v, err := base64.RawURLEncoding.Strict().DecodeString(field)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOSCOREHeader, err)
	}
	if len(v) == 1 && v[0] == 0 {
		return []byte{}, nil
	}
	return v, nil
}
