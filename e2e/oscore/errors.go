package oscore

import "errors"

// Errors callers branch on with errors.Is. The verification errors map to the
// unprotected error responses of §8.2 (see ErrorResponse).
var (
	// ErrNotOSCORE: the message carries no OSCORE option.
	ErrNotOSCORE = errors.New("oscore: not an OSCORE message")
	// ErrDecode: the OSCORE option, the payload or the decrypted plaintext
	// is malformed (§8.2 step 2: "Failed to decode COSE").
	ErrDecode = errors.New("oscore: failed to decode COSE")
	// ErrUnknownKID: no security context matches the 'kid' and 'kid
	// context' (§8.2 step 2: "Security context not found").
	ErrUnknownKID = errors.New("oscore: security context not found")
	// ErrReplay: the Partial IV was seen before, or a response or
	// notification arrived that the exchange can no longer accept (§7.4,
	// §7.4.1).
	ErrReplay = errors.New("oscore: replay detected")
	// ErrDecrypt: AEAD verification failed (§8.2 step 6, §8.4 step 5).
	ErrDecrypt = errors.New("oscore: decryption failed")
	// ErrUnexpectedObserve: a response carries an Inner Observe option but
	// its request was not an Observe registration (§4.1.3.5.2).
	ErrUnexpectedObserve = errors.New("oscore: notification to a request that did not observe")
	// ErrNested: the message to protect already has an OSCORE option
	// (§4.1.3.7).
	ErrNested = errors.New("oscore: message already protected")
	// ErrMessage: the message cannot be protected as given (wrong code
	// class, bad Proxy-Uri, too large, options out of order).
	ErrMessage = errors.New("oscore: cannot protect message")
	// ErrSeqExhausted: the Sender Sequence Number passed 2^40-1 (§7.2.1);
	// the context must be replaced.
	ErrSeqExhausted = errors.New("oscore: sender sequence number exhausted")
	// ErrSeqStore: the Sender Sequence Number could not be persisted, so it
	// was not used (§7.5, Appendix B.1.1).
	ErrSeqStore = errors.New("oscore: cannot store sender sequence number")
	// ErrConfig: the security context parameters are invalid (§3.3).
	ErrConfig = errors.New("oscore: invalid security context")
	// ErrFileMode: a security context file is accessible to group or
	// others.
	ErrFileMode = errors.New("oscore: security context file must not be accessible to group or others")
)
