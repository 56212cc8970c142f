package signed

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/fxamacker/cbor/v2"
	"github.com/pion/dtls/v3/pkg/crypto/ccm"
)

// EncAlgorithm is a COSE content encryption algorithm (RFC 9053 §4).
type EncAlgorithm int64

// The AEAD algorithms Encrypt0 supports.
const (
	AlgA128GCM       EncAlgorithm = 1  // AES-GCM, 128-bit key, 96-bit nonce, 128-bit tag
	AlgA192GCM       EncAlgorithm = 2  // AES-GCM, 192-bit key
	AlgA256GCM       EncAlgorithm = 3  // AES-GCM, 256-bit key
	AlgAESCCM1664128 EncAlgorithm = 10 // AES-CCM, 128-bit key, 13-byte nonce, 64-bit tag
)

// String names the algorithm as the COSE registry does.
func (a EncAlgorithm) String() string {
	switch a {
	case AlgA128GCM:
		return "A128GCM"
	case AlgA192GCM:
		return "A192GCM"
	case AlgA256GCM:
		return "A256GCM"
	case AlgAESCCM1664128:
		return "AES-CCM-16-64-128"
	}
	return fmt.Sprintf("EncAlgorithm(%d)", int64(a))
}

// KeySize is the key length in bytes, 0 for an unsupported algorithm.
func (a EncAlgorithm) KeySize() int {
	switch a {
	case AlgA128GCM, AlgAESCCM1664128:
		return 16
	case AlgA192GCM:
		return 24
	case AlgA256GCM:
		return 32
	}
	return 0
}

// NonceSize is the IV length in bytes, 0 for an unsupported algorithm.
func (a EncAlgorithm) NonceSize() int {
	switch a {
	case AlgA128GCM, AlgA192GCM, AlgA256GCM:
		return 12
	case AlgAESCCM1664128:
		return 13
	}
	return 0
}

// aead returns the AEAD for key and the longest plaintext it takes.
func (a EncAlgorithm) aead(key []byte) (cipher.AEAD, int, error) {
	if a.KeySize() == 0 || len(key) != a.KeySize() {
		return nil, 0, fmt.Errorf("%w: %v with a %d-byte key", ErrConfig, a, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if a == AlgAESCCM1664128 {
		c, err := ccm.NewCCM(block, 8, 13)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		return c, c.MaxLength(), nil
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return g, math.MaxInt32, nil
}

// GroupKey is a symmetric key shared by a publisher (or server) and its
// authorized subscribers (or clients). Anyone holding it can read and can
// produce COSE_Encrypt0 objects, but not sign: the signature inside still
// decides who the origin is.
type GroupKey struct {
	ID  []byte // key ID sent in the unprotected header; 1 to MaxKIDLen bytes
	Alg EncAlgorithm
	Key []byte
}

// Validate checks the key ID, algorithm and key length.
func (k GroupKey) Validate() error {
	if err := checkKID(k.ID); err != nil {
		return err
	}
	if k.Alg.KeySize() == 0 {
		return fmt.Errorf("%w: unsupported encryption algorithm %d", ErrConfig, int64(k.Alg))
	}
	if len(k.Key) != k.Alg.KeySize() {
		return fmt.Errorf("%w: %v needs a %d-byte key, got %d", ErrConfig, k.Alg, k.Alg.KeySize(), len(k.Key))
	}
	return nil
}

// COSE header labels used by the Encrypt0 codec (RFC 9052 §3.1).
const (
	labelAlg       int64 = 1
	labelCrit      int64 = 2
	labelCT        int64 = 3
	labelKID       int64 = 4
	labelIV        int64 = 5
	labelPartialIV int64 = 6
)

const (
	tagEncrypt0      = 0xd0 // #6.16, one byte because 16 < 24
	tagSign1         = 0xd2 // #6.18
	arrayOf3         = 0x83
	arrayOf4         = 0x84
	encrypt0Context  = "Encrypt0"
	maxHeaderEntries = 16
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{Sort: cbor.SortCoreDeterministic}.EncMode()
	if err != nil {
		panic(err) // static options; cannot fail at run time
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		IntDec:           cbor.IntDecConvertSigned,
		MaxNestedLevels:  8,
		MaxArrayElements: 16,
		MaxMapPairs:      maxHeaderEntries,
	}.DecMode()
	if err != nil {
		panic(err) // static options; cannot fail at run time
	}
}

// Encrypt0 encrypts plaintext under key as a tagged COSE_Encrypt0 object
// (RFC 9052 §5.2). The protected header carries the algorithm and
// contentType (the CoAP Content-Format of the plaintext); the unprotected
// header carries the key ID and a fresh random IV read from rnd. The AAD is
// the Enc_structure of RFC 9052 §5.3 with externalAAD.
//
// The IV is random, so one key should protect at most 2^32 messages (the
// GCM bound for random 96-bit nonces); rotate group keys well before that.
func Encrypt0(rnd io.Reader, key GroupKey, contentType uint16, plaintext, externalAAD []byte) ([]byte, error) {
	if err := key.Validate(); err != nil {
		return nil, err
	}
	aead, maxLen, err := key.Alg.aead(key.Key)
	if err != nil {
		return nil, err
	}
	if len(plaintext) > maxLen {
		return nil, fmt.Errorf("%w: plaintext of %d bytes exceeds %d for %v", ErrConfig, len(plaintext), maxLen, key.Alg)
	}
	iv := make([]byte, key.Alg.NonceSize())
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("signed: encrypt0: read IV: %w", err)
	}
	protected, err := encMode.Marshal(map[int64]any{labelAlg: int64(key.Alg), labelCT: contentType})
	if err != nil {
		return nil, fmt.Errorf("signed: encrypt0: %w", err)
	}
	aad, err := encStructure(protected, externalAAD)
	if err != nil {
		return nil, err
	}
	ct := aead.Seal(nil, iv, plaintext, aad)
	body, err := encMode.Marshal([]any{
		protected,
		map[int64]any{labelKID: key.ID, labelIV: iv},
		ct,
	})
	if err != nil {
		return nil, fmt.Errorf("signed: encrypt0: %w", err)
	}
	return append([]byte{tagEncrypt0}, body...), nil
}

// encStructure encodes the Enc_structure (RFC 9052 §5.3) for COSE_Encrypt0.
func encStructure(protected, externalAAD []byte) ([]byte, error) {
	if externalAAD == nil {
		externalAAD = []byte{}
	}
	b, err := encMode.Marshal([]any{encrypt0Context, protected, externalAAD})
	if err != nil {
		return nil, fmt.Errorf("signed: encrypt0: %w", err)
	}
	return b, nil
}

// Encrypt0Message is a parsed, not yet decrypted COSE_Encrypt0 object.
type Encrypt0Message struct {
	Alg            EncAlgorithm
	ContentType    uint16 // valid if HasContentType
	HasContentType bool
	KID            []byte
	IV             []byte
	Ciphertext     []byte

	protected []byte // the serialized protected map, as received
}

// ParseEncrypt0 decodes a tagged or untagged COSE_Encrypt0 object without
// decrypting it, so the caller can pick the key by KID. It accepts only
// what Open can process: alg in the protected header, an IV, no Partial IV
// and no crit. Failures wrap ErrMalformed. The result does not alias b.
func ParseEncrypt0(b []byte) (*Encrypt0Message, error) {
	if len(b) > 0 && b[0] == tagEncrypt0 {
		b = b[1:]
	}
	if len(b) == 0 || b[0] != arrayOf3 {
		return nil, fmt.Errorf("%w: not a COSE_Encrypt0 array", ErrMalformed)
	}
	var parts []cbor.RawMessage
	if err := decMode.Unmarshal(b, &parts); err != nil {
		return nil, fmt.Errorf("%w: encrypt0: %w", ErrMalformed, err)
	}
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: encrypt0: %d elements, want 3", ErrMalformed, len(parts))
	}
	m := &Encrypt0Message{}
	var err error
	if m.protected, err = decodeBstr(parts[0]); err != nil {
		return nil, fmt.Errorf("%w: encrypt0 protected: %w", ErrMalformed, err)
	}
	prot := map[any]cbor.RawMessage{}
	if len(m.protected) > 0 {
		if prot, err = decodeHeaderMap(m.protected); err != nil {
			return nil, fmt.Errorf("%w: encrypt0 protected: %w", ErrMalformed, err)
		}
	}
	unprot, err := decodeHeaderMap(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: encrypt0 unprotected: %w", ErrMalformed, err)
	}
	if m.Ciphertext, err = decodeBstr(parts[2]); err != nil {
		return nil, fmt.Errorf("%w: encrypt0 ciphertext: %w", ErrMalformed, err)
	}
	for label := range prot {
		if _, dup := unprot[label]; dup {
			return nil, fmt.Errorf("%w: encrypt0: label %v in both buckets", ErrMalformed, label)
		}
	}
	if _, ok := prot[labelCrit]; ok {
		return nil, fmt.Errorf("%w: encrypt0: critical parameters not supported", ErrMalformed)
	}
	if _, ok := unprot[labelPartialIV]; ok || prot[labelPartialIV] != nil {
		return nil, fmt.Errorf("%w: encrypt0: Partial IV not supported", ErrMalformed)
	}
	if _, ok := unprot[labelAlg]; ok {
		return nil, fmt.Errorf("%w: encrypt0: alg must be protected", ErrMalformed)
	}
	raw, ok := prot[labelAlg]
	if !ok {
		return nil, fmt.Errorf("%w: encrypt0: no alg", ErrMalformed)
	}
	var alg int64
	if err := decMode.Unmarshal(raw, &alg); err != nil || raw[0]>>5 > 1 {
		return nil, fmt.Errorf("%w: encrypt0: alg is not an int", ErrMalformed)
	}
	m.Alg = EncAlgorithm(alg)
	if raw, ok := prot[labelCT]; ok {
		var ct uint16
		if raw[0]>>5 != 0 || decMode.Unmarshal(raw, &ct) != nil {
			return nil, fmt.Errorf("%w: encrypt0: content type is not a CoAP Content-Format", ErrMalformed)
		}
		m.ContentType, m.HasContentType = ct, true
	}
	if raw, ok := unprot[labelKID]; ok {
		if m.KID, err = decodeBstr(raw); err != nil {
			return nil, fmt.Errorf("%w: encrypt0 kid: %w", ErrMalformed, err)
		}
	}
	raw, ok = unprot[labelIV]
	if !ok {
		raw, ok = prot[labelIV]
	}
	if !ok {
		return nil, fmt.Errorf("%w: encrypt0: no IV", ErrMalformed)
	}
	if m.IV, err = decodeBstr(raw); err != nil {
		return nil, fmt.Errorf("%w: encrypt0 IV: %w", ErrMalformed, err)
	}
	return m, nil
}

// Open authenticates and decrypts the message under key with externalAAD.
// An algorithm other than the key's, or a failed authentication, wraps
// ErrDecrypt; an IV of the wrong length wraps ErrMalformed.
func (m *Encrypt0Message) Open(key GroupKey, externalAAD []byte) ([]byte, error) {
	if m.Alg != key.Alg {
		return nil, fmt.Errorf("%w: algorithm %v, group key is %v", ErrDecrypt, m.Alg, key.Alg)
	}
	aead, _, err := key.Alg.aead(key.Key)
	if err != nil {
		return nil, err
	}
	if len(m.IV) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: encrypt0: IV of %d bytes, %v needs %d", ErrMalformed, len(m.IV), m.Alg, aead.NonceSize())
	}
	if len(m.Ciphertext) < aead.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext shorter than the tag", ErrDecrypt)
	}
	aad, err := encStructure(m.protected, externalAAD)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, m.IV, m.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return pt, nil
}

// decodeBstr decodes a CBOR byte string and nothing else (a []byte target
// would also take an array of small integers).
func decodeBstr(raw cbor.RawMessage) ([]byte, error) {
	if len(raw) == 0 || raw[0]>>5 != 2 {
		return nil, errors.New("not a bstr")
	}
	var b []byte
	if err := decMode.Unmarshal(raw, &b); err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// decodeHeaderMap decodes a header map (RFC 9052 §3) whose labels are ints
// or text strings; values stay raw.
func decodeHeaderMap(raw []byte) (map[any]cbor.RawMessage, error) {
	if len(raw) == 0 || raw[0]>>5 != 5 {
		return nil, errors.New("not a map")
	}
	var m map[any]cbor.RawMessage
	if err := decMode.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for label := range m {
		switch label.(type) {
		case int64, string:
		default:
			return nil, fmt.Errorf("label of type %T", label)
		}
	}
	return m, nil
}
