package signed

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestEncrypt0RFC9052C41 opens the "Simple Encrypted Message" of RFC 9052
// Appendix C.4.1 (AES-CCM-16-64-128 under the key "our-secret2" of
// Appendix C.7.2), so the Enc_structure and the CCM parameters match the
// spec.
func TestEncrypt0RFC9052C41(t *testing.T) {
	msg := mustHex(`d08343a1010aa1054d89f52f65a1c580933b5261a78c581c5974e1b99a3a4cc09a659aa2e9e7fff161d38ce71cb45ce460ffb569`)
	key := GroupKey{ID: []byte("our-secret2"), Alg: AlgAESCCM1664128, Key: mustHex("849b5786457c1491be3a76dcea6c4271")}
	m, err := ParseEncrypt0(msg)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := m.Open(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "This is the content." {
		t.Fatalf("plaintext %q", pt)
	}
}

var encAlgs = []EncAlgorithm{AlgAESCCM1664128, AlgA128GCM, AlgA192GCM, AlgA256GCM}

func groupKeyFor(alg EncAlgorithm) GroupKey {
	return GroupKey{ID: []byte("g-" + alg.String()), Alg: alg, Key: bytes.Repeat([]byte{7}, alg.KeySize())}
}

func TestEncrypt0RoundTrip(t *testing.T) {
	for _, alg := range encAlgs {
		t.Run(alg.String(), func(t *testing.T) {
			k := groupKeyFor(alg)
			for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abc"), 500)} {
				b, err := Encrypt0(rand.Reader, k, 0, pt, []byte("aad"))
				if err != nil {
					t.Fatal(err)
				}
				m, err := ParseEncrypt0(b)
				if err != nil {
					t.Fatal(err)
				}
				if m.Alg != alg || !bytes.Equal(m.KID, k.ID) || !m.HasContentType || m.ContentType != 0 || len(m.IV) != alg.NonceSize() {
					t.Fatalf("parsed %+v", m)
				}
				got, err := m.Open(k, []byte("aad"))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatalf("plaintext %x, want %x", got, pt)
				}
				if _, err := m.Open(k, []byte("other")); !errors.Is(err, ErrDecrypt) {
					t.Fatalf("wrong external AAD: err = %v, want ErrDecrypt", err)
				}
			}
		})
	}
}

// TestEncrypt0EveryBitFlipRejected flips each bit of a sealed object in
// turn: none may decrypt, and each must fail as malformed, unknown key or
// decryption failure.
func TestEncrypt0EveryBitFlipRejected(t *testing.T) {
	k := groupKeyFor(AlgAESCCM1664128)
	b, err := Encrypt0(rand.Reader, k, ContentFormatCOSESign1, []byte("secret reading"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		m, err := ParseEncrypt0(c)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("bit %d: parse err = %v", i, err)
			}
			continue
		}
		if !bytes.Equal(m.KID, k.ID) {
			continue // the verifier would report ErrUnknownKey
		}
		if pt, err := m.Open(k, nil); err == nil {
			t.Fatalf("bit %d: flipped object decrypted to %q", i, pt)
		} else if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("bit %d: open err = %v", i, err)
		}
	}
}

func TestEncrypt0Rejects(t *testing.T) {
	k := groupKeyFor(AlgA128GCM)
	good, err := Encrypt0(rand.Reader, k, 0, []byte("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := k
	other.Key = bytes.Repeat([]byte{8}, 16)
	ccmKey := k
	ccmKey.Alg = AlgAESCCM1664128
	cases := []struct {
		name string
		msg  []byte
		key  GroupKey
		err  error
	}{
		{"wrong key", good, other, ErrDecrypt},
		{"algorithm differs from key", good, ccmKey, ErrDecrypt},
		{"untagged is fine but truncated", good[1 : len(good)-1], k, ErrMalformed},
		{"empty", nil, k, ErrMalformed},
		{"sign1 tag", append([]byte{tagSign1}, good[1:]...), k, ErrMalformed},
		// [h'a1010a', {5: h'00'}, h'00']: 1-byte IV.
		{"short IV", mustHex("d08343a1010aa1054100" + "4100"), ccmKey, ErrMalformed},
		// [h'a1010a', {6: h'00'}, h'00']: Partial IV.
		{"partial IV", mustHex("d08343a1010aa1064100" + "4100"), ccmKey, ErrMalformed},
		// [h'', {5: h'00'}, h'00']: no alg.
		{"no alg", mustHex("d08340a1054100" + "4100"), ccmKey, ErrMalformed},
		// [h'a1010a', {1: 10, 5: h'00'}, h'00']: alg in both buckets.
		{"alg in both buckets", mustHex("d08343a1010aa2010a054100" + "4100"), ccmKey, ErrMalformed},
		// [h'a2010a0281 01', ...]: crit.
		{"crit", mustHex("d08346a2010a028101a1054100" + "4100"), ccmKey, ErrMalformed},
		// [h'a1010a', {5: h'00'}, [0]]: ciphertext as an array.
		{"ciphertext as array", mustHex("d08343a1010aa1054100" + "8100"), ccmKey, ErrMalformed},
		// [h'a1010a', {5: h'00'}, nil]: detached ciphertext.
		{"nil ciphertext", mustHex("d08343a1010aa1054100" + "f6"), ccmKey, ErrMalformed},
		// [h'a1010a', {5: h'00', 5: h'00'}, h'00']: duplicate label.
		{"duplicate label", mustHex("d08343a1010aa2054100054100" + "4100"), ccmKey, ErrMalformed},
		// [h'a1010a', {h'01': 1, 5: h'00'}, h'00']: bstr label.
		{"bstr label", mustHex("d08343a1010aa241010105410041" + "00"), ccmKey, ErrMalformed},
		// nested tag inside: [h'a1010a', {5: 1(h'00')}, h'00'].
		{"nested tag", mustHex("d08343a1010aa105c14100" + "4100"), ccmKey, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseEncrypt0(c.msg)
			if err == nil {
				_, err = m.Open(c.key, nil)
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
		})
	}
}

func TestGroupKeyValidate(t *testing.T) {
	for _, k := range []GroupKey{
		{ID: nil, Alg: AlgA128GCM, Key: make([]byte, 16)},
		{ID: []byte("g"), Alg: 99, Key: make([]byte, 16)},
		{ID: []byte("g"), Alg: AlgA256GCM, Key: make([]byte, 16)},
	} {
		if err := k.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err = %v, want ErrConfig", k, err)
		}
	}
}

// TestSealIsSignThenEncrypt pins the layering: the outer object is
// COSE_Encrypt0 with Content-Format 18 inside, and nothing of the payload,
// URI or signer's kid is visible to a proxy without the group key.
func TestSealIsSignThenEncrypt(t *testing.T) {
	for _, ac := range algCases {
		t.Run(ac.name, func(t *testing.T) {
			s := newTestSigner(t, ac.key, ac.kid)
			const uri = "coap://node7/secret-resource"
			payload := []byte("the-plaintext-reading")
			rep, err := s.Seal(uri, 0, payload, testGroupKey)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range [][]byte{payload, []byte(uri), ac.kid} {
				if bytes.Contains(rep, leak) {
					t.Errorf("sealed representation shows %q", leak)
				}
			}
			m, err := ParseEncrypt0(rep)
			if err != nil {
				t.Fatal(err)
			}
			if rep[0] != tagEncrypt0 || m.ContentType != ContentFormatCOSESign1 {
				t.Fatalf("outer tag %#x, inner content type %d", rep[0], m.ContentType)
			}
			inner, err := m.Open(testGroupKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The inner object is a complete signed representation by itself.
			v := newTestVerifier(t)
			if _, _, err := v.Verify(inner, Expectation{URI: uri}); err != nil {
				t.Fatalf("inner Sign1: %v", err)
			}
			// The sealed form carries the same counter, so after the inner
			// object it is a replay.
			if _, _, err := v.Verify(rep, Expectation{URI: uri}); !errors.Is(err, ErrStale) {
				t.Fatalf("sealed after inner: err = %v, want ErrStale", err)
			}
			got, meta, err := newTestVerifier(t).Verify(rep, Expectation{URI: uri, RequireEncrypted: true})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) || !meta.Encrypted || !bytes.Equal(meta.GroupKID, testGroupKey.ID) {
				t.Fatalf("payload %q, meta %+v", got, meta)
			}
		})
	}
}

func TestVerifySealedRejects(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	rep, err := s.Seal("/a", 0, []byte("p"), testGroupKey)
	if err != nil {
		t.Fatal(err)
	}
	unknownGroup := testGroupKey
	unknownGroup.ID = []byte("grp-2")
	rep2, err := s.Seal("/a", 0, []byte("p"), unknownGroup)
	if err != nil {
		t.Fatal(err)
	}
	notSign1, err := Encrypt0(rand.Reader, testGroupKey, 0, []byte("plain text"), nil)
	if err != nil {
		t.Fatal(err)
	}
	nested, err := Encrypt0(rand.Reader, testGroupKey, ContentFormatCOSESign1, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		rep  []byte
		err  error
	}{
		{"ciphertext bit flip", func() []byte { c := bytes.Clone(rep); c[len(c)-3] ^= 4; return c }(), ErrDecrypt},
		{"unknown group key", rep2, ErrUnknownKey},
		{"inner content type not COSE_Sign1", notSign1, ErrMalformed},
		{"Encrypt0 inside Encrypt0", nested, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := newTestVerifier(t).Verify(c.rep, Expectation{URI: "/a"}); !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
		})
	}
}
