package signed

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

var fuzzPayloads = [][]byte{[]byte("fuzz payload one"), []byte("two"), {}}

// verifySentinels are the errors Verify may return.
var verifySentinels = []error{ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrWrongResource,
	ErrWrongContentFormat, ErrStale, ErrDecrypt, ErrNotEncrypted}

func isVerifySentinel(err error) bool {
	for _, s := range verifySentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzVerify feeds arbitrary bytes to Verify. It must not panic, must fail
// with one of its sentinels, and may accept only what a trusted key signed:
// the fuzzer can reshape the unprotected header, but the payload and the
// protected parameters are those of a seed.
func FuzzVerify(f *testing.F) {
	for _, ac := range algCases {
		s := newTestSigner(f, ac.key, ac.kid)
		for i, p := range fuzzPayloads {
			// Counters: 2i+1 signed, 2i+2 sealed.
			rep := mustSign(f, s, "/f", uint16(i), p)
			f.Add(rep)
			f.Add(rep[1:]) // untagged
			sealed, err := s.Seal("/f", uint16(i), p, testGroupKey)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(sealed)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{tagSign1, arrayOf4, 0x40, 0xa0, 0x40, 0x40})
	f.Add([]byte{tagEncrypt0, arrayOf3, 0x40, 0xa0, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		v := newTestVerifier(t)
		for cf := range uint16(len(fuzzPayloads)) {
			payload, meta, err := v.Verify(b, Expectation{URI: "/f", ContentFormat: cf})
			if err != nil {
				if !isVerifySentinel(err) {
					t.Fatalf("error %v is no sentinel", err)
				}
				if payload != nil {
					t.Fatal("payload returned with an error")
				}
				continue
			}
			if !bytes.Equal(payload, fuzzPayloads[cf]) || meta.URI != "/f" || meta.ContentFormat != cf || (meta.Counter != 2*uint64(cf)+1 && meta.Counter != 2*uint64(cf)+2) {
				t.Fatalf("accepted something never signed: payload %q, meta %+v", payload, meta)
			}
		}
	})
}

var fuzzPlaintexts = [][]byte{[]byte("group secret"), {}, bytes.Repeat([]byte{1}, 300)}

// FuzzEncrypt0 feeds arbitrary bytes to ParseEncrypt0 and Open: no panic,
// only ErrMalformed from the parser, and nothing opens under the group key
// unless it is a seed. It also checks the round trip Encrypt0 -> Parse ->
// Open with the input as plaintext.
func FuzzEncrypt0(f *testing.F) {
	keys := []GroupKey{testGroupKey, groupKeyFor(AlgA128GCM)}
	for _, k := range keys {
		for _, p := range fuzzPlaintexts {
			b, err := Encrypt0(rand.Reader, k, ContentFormatCOSESign1, p, nil)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(b[1:])
		}
	}
	f.Add(mustHex(`d08343a1010aa1054d89f52f65a1c580933b5261a78c581c5974e1b99a3a4cc09a659aa2e9e7fff161d38ce71cb45ce460ffb569`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseEncrypt0(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parse error %v is not ErrMalformed", err)
			}
		} else {
			for _, k := range keys {
				pt, err := m.Open(k, nil)
				if err != nil {
					if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrMalformed) {
						t.Fatalf("open error %v", err)
					}
					continue
				}
				known := false
				for _, p := range fuzzPlaintexts {
					known = known || bytes.Equal(pt, p)
				}
				if !known {
					t.Fatalf("garbage opened to %x", pt)
				}
			}
		}
		enc, err := Encrypt0(rand.Reader, keys[1], 0, b, b)
		if err != nil {
			t.Fatal(err)
		}
		m, err = ParseEncrypt0(enc)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := m.Open(keys[1], b)
		if err != nil || !bytes.Equal(pt, b) {
			t.Fatalf("round trip: %x, %v", pt, err)
		}
	})
}
