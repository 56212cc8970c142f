package signed

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"
)

// t0 is the fixed clock of every test signer and verifier.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// The test keys are generated once: ES256 key generation is the slow part
// of the tests under -race. The attacker keys belong to a colluding client
// that holds only verification keys and the group key, so whatever it signs
// is signed with a key of its own.
var (
	edPriv     = mustEd25519()
	edAttacker = mustEd25519()
	esPriv     = mustP256()
	esAttacker = mustP256()
)

func mustEd25519() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func mustP256() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// algCase is one signature algorithm under test.
type algCase struct {
	name     string
	key      crypto.Signer
	attacker crypto.Signer
	kid      []byte
}

var algCases = []algCase{
	{"EdDSA", edPriv, edAttacker, []byte("ed-1")},
	{"ES256", esPriv, esAttacker, []byte("es-1")},
}

var testGroupKey = GroupKey{ID: []byte("grp"), Alg: AlgAESCCM1664128, Key: bytes.Repeat([]byte{0x42}, 16)}

func newTestSigner(t testing.TB, key crypto.Signer, kid []byte) *Signer {
	t.Helper()
	s, err := NewSigner(SignerConfig{Key: key, KID: kid, Now: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestVerifier trusts both test keys (under their kids) and the group key.
func newTestVerifier(t testing.TB) *Verifier {
	t.Helper()
	v := NewVerifier(VerifierConfig{Now: fixedClock(t0)})
	for _, c := range algCases {
		if err := v.AddKey(c.kid, c.key.Public()); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.AddGroupKey(testGroupKey); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustSign(t testing.TB, s *Signer, uri string, cf uint16, payload []byte) []byte {
	t.Helper()
	rep, err := s.Sign(uri, cf, payload)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
