package signed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/veraison/go-cose"
)

// SignerConfig configures a Signer.
type SignerConfig struct {
	// Key is an ed25519.PrivateKey (EdDSA) or a P-256 *ecdsa.PrivateKey
	// (ES256).
	Key crypto.Signer
	// KID is the key ID verifiers look the public key up by; 1 to
	// MaxKIDLen bytes.
	KID []byte
	// Counter is the last counter already used with this key; the first
	// Sign uses Counter+1. A signer that restarts must resume above every
	// counter it issued before, or verifiers reject it as stale: persist
	// Signer.Counter (or a high-water mark ahead of it).
	Counter uint64
	// Now is the clock for the timestamp; nil means time.Now.
	Now func() time.Time
	// Rand is the randomness for ES256 signatures and Encrypt0 IVs; nil
	// means crypto/rand.Reader.
	Rand io.Reader
}

// Signer produces signed (and, with Seal, encrypted) representations. It is
// safe for concurrent use.
type Signer struct {
	signer cose.Signer
	alg    cose.Algorithm
	kid    []byte
	now    func() time.Time
	rand   io.Reader

	mu      sync.Mutex
	counter uint64 // guarded by mu: the last counter issued
}

// NewSigner returns a Signer for cfg.
func NewSigner(cfg SignerConfig) (*Signer, error) {
	if err := checkKID(cfg.KID); err != nil {
		return nil, err
	}
	if cfg.Counter >= MaxCounter {
		return nil, fmt.Errorf("%w: starting counter %d", ErrCounterExhausted, cfg.Counter)
	}
	alg, err := AlgorithmOf(cfg.Key)
	if err != nil {
		return nil, err
	}
	cs, err := cose.NewSigner(alg, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := &Signer{
		signer:  cs,
		alg:     alg,
		kid:     append([]byte(nil), cfg.KID...),
		now:     cfg.Now,
		rand:    cfg.Rand,
		counter: cfg.Counter,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	return s, nil
}

// AlgorithmOf returns the COSE signature algorithm for a private key
// (crypto.Signer) or a public key: EdDSA for Ed25519, ES256 for P-256.
func AlgorithmOf(key any) (cose.Algorithm, error) {
	if s, ok := key.(crypto.Signer); ok {
		key = s.Public()
	}
	switch k := key.(type) {
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return cose.AlgorithmEdDSA, nil
		}
	case *ecdsa.PublicKey:
		if k != nil && k.Curve == elliptic.P256() {
			return cose.AlgorithmES256, nil
		}
	}
	return 0, fmt.Errorf("%w: key type %T is neither Ed25519 nor ECDSA P-256", ErrConfig, key)
}

// KID returns a copy of the signer's key ID.
func (s *Signer) KID() []byte { return append([]byte(nil), s.kid...) }

// Algorithm returns the signature algorithm.
func (s *Signer) Algorithm() cose.Algorithm { return s.alg }

// Counter returns the last counter issued.
func (s *Signer) Counter() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counter
}

// Sign returns a tagged COSE_Sign1 object (Content-Format 18) carrying
// payload, bound to the resource uri, the payload's CoAP Content-Format
// contentFormat, the next counter, the current time and the key ID. The uri
// is compared byte for byte by verifiers: use the same canonical form on
// both ends.
func (s *Signer) Sign(uri string, contentFormat uint16, payload []byte) ([]byte, error) {
	if err := checkURI(uri); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.counter >= MaxCounter {
		s.mu.Unlock()
		return nil, ErrCounterExhausted
	}
	s.counter++
	counter := s.counter
	// The clock is read under the lock so that time never goes backwards
	// as the counter goes forwards, given a monotonic clock.
	now := s.now()
	s.mu.Unlock()

	if payload == nil {
		payload = []byte{} // nil would mean a detached payload
	}
	hdr := cose.Headers{
		Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   s.alg,
			cose.HeaderLabelCritical:    critLabels,
			cose.HeaderLabelContentType: contentFormat,
			cose.HeaderLabelKeyID:       s.kid,
			HeaderLabelURI:              uri,
			HeaderLabelCounter:          counter,
			HeaderLabelTime:             now.Unix(),
		},
		Unprotected: cose.UnprotectedHeader{},
	}
	out, err := cose.Sign1(s.rand, s.signer, hdr, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("signed: sign: %w", err)
	}
	return out, nil
}

// Seal signs like Sign and then encrypts the signed object as a tagged
// COSE_Encrypt0 (Content-Format 16) under the group key gk. The signature
// is inside the encryption: only group members learn the payload, the
// resource URI, the counter and the signer's key ID.
func (s *Signer) Seal(uri string, contentFormat uint16, payload []byte, gk GroupKey) ([]byte, error) {
	if err := gk.Validate(); err != nil {
		return nil, err
	}
	inner, err := s.Sign(uri, contentFormat, payload)
	if err != nil {
		return nil, err
	}
	return Encrypt0(s.rand, gk, ContentFormatCOSESign1, inner, nil)
}
