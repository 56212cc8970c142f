package signed

import (
	"crypto"
	"fmt"
	"sync"
	"time"

	"github.com/veraison/go-cose"
)

// Defaults for VerifierConfig fields left zero.
const (
	DefaultMaxEntries = 1024
	DefaultMaxKeys    = 64
	DefaultMaxSize    = 64 << 10
)

// VerifierConfig configures a Verifier. Zero values take the defaults.
type VerifierConfig struct {
	// MaxEntries bounds the (kid, resource) counters kept for replay
	// detection; see README.md for what eviction does. Default
	// DefaultMaxEntries.
	MaxEntries int
	// MaxKeys bounds the verification keys and, separately, the group
	// keys. Default DefaultMaxKeys.
	MaxKeys int
	// MaxSize is the longest representation Verify parses. Default
	// DefaultMaxSize.
	MaxSize int
	// Now is the clock used when Expectation.Now is zero; nil means
	// time.Now.
	Now func() time.Time
}

// Expectation is what the caller knows a representation must be: the
// resource it asked for, the Content-Format it asked for, and how fresh it
// must be.
type Expectation struct {
	// URI is the resource URI, compared byte for byte with the signed one.
	URI string
	// ContentFormat is the CoAP Content-Format the payload must have.
	ContentFormat uint16
	// MinCounter is the lowest counter accepted, on top of the Verifier's
	// own replay record (for example one restored from storage).
	MinCounter uint64
	// MaxAge, if positive, enables the time window: the signing time must
	// not be older than Now-MaxAge nor later than Now+MaxSkew. Zero skips
	// time checks, for endpoints without a synchronized clock; ordering
	// then rests on the counter alone.
	MaxAge time.Duration
	// MaxSkew is how far in the future a signing time may be (clock
	// drift); used only when MaxAge is positive.
	MaxSkew time.Duration
	// Now is the verification time; zero means the Verifier's clock.
	Now time.Time
	// RequireEncrypted rejects a plain COSE_Sign1 with ErrNotEncrypted.
	RequireEncrypted bool
}

// Meta describes an accepted representation. Verify also fills it when it
// rejects a validly signed one (ErrWrongResource, ErrWrongContentFormat,
// ErrStale), for diagnostics.
type Meta struct {
	KID           []byte
	Alg           cose.Algorithm
	URI           string
	ContentFormat uint16
	Counter       uint64
	Time          time.Time
	// Encrypted is set when the representation came as COSE_Encrypt0;
	// GroupKID is then the group key's ID.
	Encrypted bool
	GroupKID  []byte
}

type verificationKey struct {
	alg cose.Algorithm
	v   cose.Verifier
}

// Verifier checks representations against trusted public keys and group
// keys and keeps the replay record. It is safe for concurrent use.
type Verifier struct {
	maxKeys int
	maxSize int
	now     func() time.Time

	keysMu sync.RWMutex
	keys   map[string]verificationKey // guarded by keysMu; at most maxKeys
	groups map[string]GroupKey        // guarded by keysMu; at most maxKeys

	replayMu sync.Mutex
	replay   *replayState // guarded by replayMu
}

// NewVerifier returns a Verifier with no keys.
func NewVerifier(cfg VerifierConfig) *Verifier {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{
		maxKeys: cfg.MaxKeys,
		maxSize: cfg.MaxSize,
		now:     cfg.Now,
		keys:    make(map[string]verificationKey),
		groups:  make(map[string]GroupKey),
		replay:  newReplayState(cfg.MaxEntries),
	}
}

// AddKey trusts pub (ed25519.PublicKey or P-256 *ecdsa.PublicKey) for
// representations naming kid. Replacing the key of a kid keeps its replay
// record.
func (v *Verifier) AddKey(kid []byte, pub crypto.PublicKey) error {
	if err := checkKID(kid); err != nil {
		return err
	}
	alg, err := AlgorithmOf(pub)
	if err != nil {
		return err
	}
	cv, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	v.keysMu.Lock()
	defer v.keysMu.Unlock()
	if _, ok := v.keys[string(kid)]; !ok && len(v.keys) >= v.maxKeys {
		return fmt.Errorf("%w: already %d verification keys", ErrConfig, v.maxKeys)
	}
	v.keys[string(kid)] = verificationKey{alg: alg, v: cv}
	return nil
}

// RemoveKey stops trusting kid and forgets its replay record.
func (v *Verifier) RemoveKey(kid []byte) {
	v.keysMu.Lock()
	delete(v.keys, string(kid))
	v.keysMu.Unlock()
	v.replayMu.Lock()
	v.replay.forget(string(kid))
	v.replayMu.Unlock()
}

// AddGroupKey adds or replaces a group key for opening COSE_Encrypt0.
func (v *Verifier) AddGroupKey(k GroupKey) error {
	if err := k.Validate(); err != nil {
		return err
	}
	k.ID = append([]byte(nil), k.ID...)
	k.Key = append([]byte(nil), k.Key...)
	v.keysMu.Lock()
	defer v.keysMu.Unlock()
	if _, ok := v.groups[string(k.ID)]; !ok && len(v.groups) >= v.maxKeys {
		return fmt.Errorf("%w: already %d group keys", ErrConfig, v.maxKeys)
	}
	v.groups[string(k.ID)] = k
	return nil
}

// RemoveGroupKey forgets the group key with the given ID.
func (v *Verifier) RemoveGroupKey(id []byte) {
	v.keysMu.Lock()
	delete(v.groups, string(id))
	v.keysMu.Unlock()
}

// LastCounter returns the highest counter accepted for kid and uri, for
// persisting it as a future Expectation.MinCounter.
func (v *Verifier) LastCounter(kid []byte, uri string) (uint64, bool) {
	v.replayMu.Lock()
	defer v.replayMu.Unlock()
	if e, ok := v.replay.entries[replayKey{string(kid), uri}]; ok {
		return e.Value.(*replayEntry).counter, true
	}
	return 0, false
}

// Verify checks rep, a COSE_Sign1 or a COSE_Encrypt0 wrapping one, against
// the trusted keys and want, and on success returns the payload and its
// metadata and records the counter. The checks run in this order, and the
// first failure is returned: size and syntax (ErrMalformed), group key
// (ErrUnknownKey, ErrDecrypt), signing key (ErrUnknownKey), signature
// (ErrBadSignature), resource (ErrWrongResource), Content-Format
// (ErrWrongContentFormat), freshness and replay (ErrStale). Nothing that
// depends on unauthenticated bytes is reported beyond ErrMalformed and
// ErrUnknownKey. The payload does not alias rep.
func (v *Verifier) Verify(rep []byte, want Expectation) ([]byte, Meta, error) {
	var meta Meta
	if len(rep) > v.maxSize {
		return nil, meta, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(rep), v.maxSize)
	}
	inner := rep
	if len(rep) > 0 && (rep[0] == tagEncrypt0 || rep[0] == arrayOf3) {
		m, err := ParseEncrypt0(rep)
		if err != nil {
			return nil, meta, err
		}
		v.keysMu.RLock()
		gk, ok := v.groups[string(m.KID)]
		v.keysMu.RUnlock()
		if !ok {
			return nil, meta, fmt.Errorf("%w: group key ID %x", ErrUnknownKey, m.KID)
		}
		pt, err := m.Open(gk, nil)
		if err != nil {
			return nil, meta, err
		}
		if m.HasContentType && m.ContentType != ContentFormatCOSESign1 {
			return nil, meta, fmt.Errorf("%w: encrypt0 carries Content-Format %d, want %d", ErrMalformed, m.ContentType, ContentFormatCOSESign1)
		}
		inner = pt
		meta.Encrypted = true
		meta.GroupKID = m.KID
	} else if want.RequireEncrypted {
		return nil, meta, ErrNotEncrypted
	}

	msg, err := decodeSign1(inner)
	if err != nil {
		return nil, meta, err
	}
	h, err := parseSign1Header(msg.Headers.Protected)
	if err != nil {
		return nil, meta, err
	}
	v.keysMu.RLock()
	key, ok := v.keys[string(h.kid)]
	v.keysMu.RUnlock()
	if !ok {
		return nil, meta, fmt.Errorf("%w: key ID %x", ErrUnknownKey, h.kid)
	}
	if h.alg != key.alg {
		return nil, meta, fmt.Errorf("%w: algorithm %v, key %x is %v", ErrBadSignature, h.alg, h.kid, key.alg)
	}
	if err := msg.Verify(nil, key.v); err != nil {
		return nil, meta, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}

	meta.KID = h.kid
	meta.Alg = h.alg
	meta.URI = h.uri
	meta.ContentFormat = h.cf
	meta.Counter = h.counter
	meta.Time = h.time
	if h.uri != want.URI {
		return nil, meta, fmt.Errorf("%w: signed for %q, want %q", ErrWrongResource, h.uri, want.URI)
	}
	if h.cf != want.ContentFormat {
		return nil, meta, fmt.Errorf("%w: signed as %d, want %d", ErrWrongContentFormat, h.cf, want.ContentFormat)
	}
	if h.counter < want.MinCounter {
		return nil, meta, fmt.Errorf("%w: counter %d below minimum %d", ErrStale, h.counter, want.MinCounter)
	}
	if want.MaxAge > 0 {
		now := want.Now
		if now.IsZero() {
			now = v.now()
		}
		// Compare instants, not durations: now.Sub saturates for far-off
		// signed times, and negating a saturated Duration overflows.
		if h.time.Before(now.Add(-want.MaxAge)) {
			return nil, meta, fmt.Errorf("%w: signed at %v, window starts %v", ErrStale, h.time.UTC(), now.Add(-want.MaxAge).UTC())
		}
		if h.time.After(now.Add(want.MaxSkew)) {
			return nil, meta, fmt.Errorf("%w: signed at %v, after now %v plus skew %v", ErrStale, h.time.UTC(), now.UTC(), want.MaxSkew)
		}
	}
	v.replayMu.Lock()
	last, _ := v.replay.last(string(h.kid), h.uri)
	fresh := v.replay.accept(string(h.kid), h.uri, h.counter)
	v.replayMu.Unlock()
	if !fresh {
		return nil, meta, fmt.Errorf("%w: counter %d not above %d", ErrStale, h.counter, last)
	}
	return append([]byte{}, msg.Payload...), meta, nil
}

// decodeSign1 decodes a tagged or untagged COSE_Sign1 with an attached
// payload. Failures wrap ErrMalformed.
func decodeSign1(b []byte) (*cose.Sign1Message, error) {
	var msg cose.Sign1Message
	var err error
	switch {
	case len(b) > 0 && b[0] == tagSign1:
		err = msg.UnmarshalCBOR(b)
	case len(b) > 0 && b[0] == arrayOf4:
		err = (*cose.UntaggedSign1Message)(&msg).UnmarshalCBOR(b)
	default:
		return nil, fmt.Errorf("%w: not a COSE_Sign1 or COSE_Encrypt0 object", ErrMalformed)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	return &msg, nil
}
