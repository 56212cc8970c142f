package signed

import "errors"

// Errors callers branch on with errors.Is. Verify returns exactly one of the
// first eight for any input it rejects.
var (
	// ErrMalformed: the representation is not a well-formed COSE object of
	// the kind this package produces (bad CBOR, missing or mistyped header
	// parameters, unknown critical parameters, oversized input).
	ErrMalformed = errors.New("signed: malformed representation")
	// ErrUnknownKey: no verification key (or group key) has the key ID the
	// representation names.
	ErrUnknownKey = errors.New("signed: unknown key")
	// ErrBadSignature: the signature does not verify under the key of the
	// named key ID, or the algorithm does not match that key.
	ErrBadSignature = errors.New("signed: bad signature")
	// ErrWrongResource: validly signed, but for a different resource URI.
	ErrWrongResource = errors.New("signed: wrong resource")
	// ErrWrongContentFormat: validly signed, but the payload has a
	// different Content-Format than expected.
	ErrWrongContentFormat = errors.New("signed: wrong content format")
	// ErrStale: validly signed, but the counter is not newer than the last
	// one accepted for this key and resource, is below the expected minimum,
	// or the timestamp lies outside the freshness window.
	ErrStale = errors.New("signed: stale representation")
	// ErrDecrypt: the COSE_Encrypt0 layer does not authenticate under the
	// group key of its key ID.
	ErrDecrypt = errors.New("signed: decryption failed")
	// ErrNotEncrypted: a plain COSE_Sign1 arrived where the expectation
	// requires the encrypted form.
	ErrNotEncrypted = errors.New("signed: representation not encrypted")
	// ErrCounterExhausted: the signer's counter reached MaxCounter; the key
	// must be replaced.
	ErrCounterExhausted = errors.New("signed: counter exhausted")
	// ErrConfig: a key, key ID or configuration value is unusable.
	ErrConfig = errors.New("signed: invalid configuration")
	// ErrKeyFileMode: a private key file is accessible to group or others.
	ErrKeyFileMode = errors.New("signed: private key file accessible to others")
)
