package signed

import (
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/veraison/go-cose"
)

// CoAP Content-Format numbers of the outer representation (RFC 9052 §11,
// IANA "CoAP Content-Formats"): application/cose with the cose-type
// parameter of the object carried.
const (
	ContentFormatCOSEEncrypt0 uint16 = 16 // application/cose; cose-type="cose-encrypt0"
	ContentFormatCOSESign1    uint16 = 18 // application/cose; cose-type="cose-sign1"
)

// Header labels this package defines, in the private-use range of the IANA
// "COSE Header Parameters" registry (integers less than -65536). They are
// listed in the crit parameter of every signed object (RFC 9052 §3.1), but
// generic COSE verifiers such as go-cose accept the object without knowing
// them: only Verify, or a consumer doing its checks, enforces the binding.
const (
	// HeaderLabelURI carries the resource URI as a tstr.
	HeaderLabelURI int64 = -65537
	// HeaderLabelCounter carries the signer's counter as a uint.
	HeaderLabelCounter int64 = -65538
	// HeaderLabelTime carries the signing time as an int of seconds since
	// the Unix epoch (a CWT NumericDate without fractions).
	HeaderLabelTime int64 = -65539
)

// MaxCounter is the largest counter a Signer issues. The CBOR decoder used
// by go-cose turns integers into int64, so larger values would not
// round-trip.
const MaxCounter = math.MaxInt64

// MaxKIDLen is the longest key ID accepted, for signing and group keys.
const MaxKIDLen = 64

// critLabels is the crit parameter of every signed object.
var critLabels = []any{HeaderLabelURI, HeaderLabelCounter, HeaderLabelTime}

// sign1Header is the decoded content of a signed object's protected header.
type sign1Header struct {
	alg     cose.Algorithm
	kid     []byte
	uri     string
	cf      uint16
	counter uint64
	time    time.Time
}

// parseSign1Header extracts and type-checks the parameters of a protected
// header that go-cose has already decoded and checked for duplicates.
// Failures wrap ErrMalformed.
func parseSign1Header(h cose.ProtectedHeader) (sign1Header, error) {
	var out sign1Header
	alg, err := h.Algorithm()
	if err != nil {
		return out, fmt.Errorf("%w: alg: %w", ErrMalformed, err)
	}
	out.alg = alg
	if crit, ok := h[cose.HeaderLabelCritical]; ok {
		labels, ok := crit.([]any)
		if !ok {
			return out, fmt.Errorf("%w: crit is not an array", ErrMalformed)
		}
		for _, l := range labels {
			if !understood(l) {
				return out, fmt.Errorf("%w: critical parameter %v not understood", ErrMalformed, l)
			}
		}
	}
	kid, ok := h[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) == 0 {
		return out, fmt.Errorf("%w: kid missing or not a non-empty bstr", ErrMalformed)
	}
	out.kid = kid
	uri, ok := h[HeaderLabelURI].(string)
	if !ok {
		return out, fmt.Errorf("%w: resource URI missing or not a tstr", ErrMalformed)
	}
	out.uri = uri
	cf, ok := h[cose.HeaderLabelContentType].(int64)
	if !ok || cf < 0 || cf > math.MaxUint16 {
		return out, fmt.Errorf("%w: content type missing or not a CoAP Content-Format", ErrMalformed)
	}
	out.cf = uint16(cf)
	c, ok := h[HeaderLabelCounter].(int64)
	if !ok || c < 0 {
		return out, fmt.Errorf("%w: counter missing or not a uint", ErrMalformed)
	}
	out.counter = uint64(c)
	ts, ok := h[HeaderLabelTime].(int64)
	if !ok {
		return out, fmt.Errorf("%w: time missing or not an int", ErrMalformed)
	}
	out.time = time.Unix(ts, 0)
	return out, nil
}

// understood reports whether a crit entry names a parameter this package
// processes (RFC 9052 §3.1: unknown critical parameters fail the message).
func understood(label any) bool {
	l, ok := label.(int64)
	if !ok {
		return false
	}
	switch l {
	case cose.HeaderLabelAlgorithm, cose.HeaderLabelContentType, cose.HeaderLabelKeyID,
		HeaderLabelURI, HeaderLabelCounter, HeaderLabelTime:
		return true
	}
	return false
}

// checkKID validates a key ID for signing or key registration.
func checkKID(kid []byte) error {
	if len(kid) == 0 || len(kid) > MaxKIDLen {
		return fmt.Errorf("%w: key ID of %d bytes, want 1 to %d", ErrConfig, len(kid), MaxKIDLen)
	}
	return nil
}

// checkURI validates a resource URI for signing: CBOR text strings must be
// UTF-8.
func checkURI(uri string) error {
	if uri == "" || !utf8.ValidString(uri) {
		return fmt.Errorf("%w: resource URI must be non-empty UTF-8", ErrConfig)
	}
	return nil
}
