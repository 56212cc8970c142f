package signed

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	payloads := []struct {
		name    string
		cf      uint16
		payload []byte
	}{
		{"text", 0, []byte("21.5 C")},
		{"empty", 0, nil},
		{"cbor", 60, []byte{0xa1, 0x01, 0x02}},
		{"large", 42, bytes.Repeat([]byte{0xa5}, 4096)},
	}
	for _, ac := range algCases {
		for _, p := range payloads {
			t.Run(ac.name+"/"+p.name, func(t *testing.T) {
				s := newTestSigner(t, ac.key, ac.kid)
				v := newTestVerifier(t)
				rep := mustSign(t, s, "coap://node1/temp", p.cf, p.payload)
				if rep[0] != tagSign1 {
					t.Fatalf("first byte %#x, want tag 18", rep[0])
				}
				got, meta, err := v.Verify(rep, Expectation{URI: "coap://node1/temp", ContentFormat: p.cf, MaxAge: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, p.payload) {
					t.Errorf("payload %x, want %x", got, p.payload)
				}
				want := Meta{KID: ac.kid, Alg: s.Algorithm(), URI: "coap://node1/temp", ContentFormat: p.cf, Counter: 1, Time: t0}
				if fmt.Sprint(meta) != fmt.Sprint(want) || !meta.Time.Equal(t0) {
					t.Errorf("meta %+v, want %+v", meta, want)
				}
				if last, ok := v.LastCounter(ac.kid, "coap://node1/temp"); !ok || last != 1 {
					t.Errorf("LastCounter = %d, %v; want 1, true", last, ok)
				}
			})
		}
	}
}

func TestVerifyAcceptsUntaggedSign1(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	rep := mustSign(t, s, "/a", 0, []byte("x"))
	if _, _, err := newTestVerifier(t).Verify(rep[1:], Expectation{URI: "/a"}); err != nil {
		t.Fatal(err)
	}
}

func TestCountersIncreaseAcrossSigns(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	v := newTestVerifier(t)
	for i := uint64(1); i <= 5; i++ {
		uri := []string{"/a", "/b"}[i%2]
		_, meta, err := v.Verify(mustSign(t, s, uri, 0, nil), Expectation{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		if meta.Counter != i {
			t.Fatalf("counter %d, want %d", meta.Counter, i)
		}
	}
	if s.Counter() != 5 {
		t.Errorf("Counter() = %d, want 5", s.Counter())
	}
}

// flipIn flips the lowest bit of the first byte of the first occurrence of
// sub in b, in a copy.
func flipIn(t *testing.T, b, sub []byte) []byte {
	t.Helper()
	i := bytes.Index(b, sub)
	if i < 0 {
		t.Fatalf("%x not in %x", sub, b)
	}
	out := bytes.Clone(b)
	out[i] ^= 1
	return out
}

func TestVerifyRejects(t *testing.T) {
	const uri = "coap://[2001:db8::1]/sensors/temp"
	for _, ac := range algCases {
		t.Run(ac.name, func(t *testing.T) {
			payload := []byte("payload-21.5")
			want := Expectation{URI: uri, ContentFormat: 0}
			attacker := newTestSigner(t, ac.attacker, ac.kid) // right kid, wrong key
			cases := []struct {
				name    string
				prepare func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation)
				err     error
			}{
				{"payload bit flip", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return flipIn(t, mustSign(t, s, uri, 0, payload), payload), want
				}, ErrBadSignature},
				{"protected URI bit flip", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return flipIn(t, mustSign(t, s, uri, 0, payload), []byte("sensors")), Expectation{URI: "coap://[2001:db8::1]/rensors/temp"}
				}, ErrBadSignature},
				{"signature bit flip", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					rep := mustSign(t, s, uri, 0, payload)
					rep[len(rep)-1] ^= 0x80
					return rep, want
				}, ErrBadSignature},
				{"representation of /a served for /b", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return mustSign(t, s, "coap://node/a", 0, payload), Expectation{URI: "coap://node/b"}
				}, ErrWrongResource},
				{"wrong content format", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return mustSign(t, s, uri, 50, payload), want
				}, ErrWrongContentFormat},
				{"replayed older counter", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					old := mustSign(t, s, uri, 0, []byte("old"))
					if _, _, err := v.Verify(mustSign(t, s, uri, 0, []byte("new")), want); err != nil {
						t.Fatal(err)
					}
					return old, want
				}, ErrStale},
				{"replayed same representation", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					rep := mustSign(t, s, uri, 0, payload)
					if _, _, err := v.Verify(rep, want); err != nil {
						t.Fatal(err)
					}
					return rep, want
				}, ErrStale},
				{"counter below MinCounter", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					w := want
					w.MinCounter = 2
					return mustSign(t, s, uri, 0, payload), w
				}, ErrStale},
				{"older than the window", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					w := want
					w.MaxAge, w.Now = time.Minute, t0.Add(61*time.Second)
					return mustSign(t, s, uri, 0, payload), w
				}, ErrStale},
				{"from the future beyond skew", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					w := want
					w.MaxAge, w.MaxSkew, w.Now = time.Minute, 5*time.Second, t0.Add(-6*time.Second)
					return mustSign(t, s, uri, 0, payload), w
				}, ErrStale},
				{"unknown kid", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return mustSign(t, newTestSigner(t, ac.key, []byte("nobody")), uri, 0, payload), want
				}, ErrUnknownKey},
				{"colluding client signs under the server's kid", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return mustSign(t, attacker, uri, 0, payload), want
				}, ErrBadSignature},
				{"colluding group member wraps its own signature", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					rep, err := attacker.Seal(uri, 0, payload, testGroupKey)
					if err != nil {
						t.Fatal(err)
					}
					return rep, want
				}, ErrBadSignature},
				{"colluding group member rewraps /a for /b", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					rep, err := Encrypt0(rand.Reader, testGroupKey, ContentFormatCOSESign1, mustSign(t, s, "coap://node/a", 0, payload), nil)
					if err != nil {
						t.Fatal(err)
					}
					return rep, Expectation{URI: "coap://node/b"}
				}, ErrWrongResource},
				{"plain where encryption is required", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					w := want
					w.RequireEncrypted = true
					return mustSign(t, s, uri, 0, payload), w
				}, ErrNotEncrypted},
				{"empty", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return nil, want
				}, ErrMalformed},
				{"garbage", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return []byte("not cose at all"), want
				}, ErrMalformed},
				{"trailing byte", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return append(mustSign(t, s, uri, 0, payload), 0), want
				}, ErrMalformed},
				{"oversized", func(t *testing.T, s *Signer, v *Verifier) ([]byte, Expectation) {
					return mustSign(t, s, uri, 0, make([]byte, DefaultMaxSize)), want
				}, ErrMalformed},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s := newTestSigner(t, ac.key, ac.kid)
					v := newTestVerifier(t)
					rep, exp := c.prepare(t, s, v)
					got, _, err := v.Verify(rep, exp)
					if !errors.Is(err, c.err) {
						t.Fatalf("err = %v, want %v", err, c.err)
					}
					if got != nil {
						t.Errorf("payload %x returned with an error", got)
					}
				})
			}
		})
	}
}

// TestVerifyRejectsEveryTruncation pins that no prefix of a valid
// representation, signed or sealed, is accepted, and that each is reported
// as malformed.
func TestVerifyRejectsEveryTruncation(t *testing.T) {
	for _, ac := range algCases {
		s := newTestSigner(t, ac.key, ac.kid)
		signed := mustSign(t, s, "/t", 0, []byte("truncate me"))
		sealed, err := s.Seal("/t", 0, []byte("truncate me"), testGroupKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range [][]byte{signed, sealed} {
			v := newTestVerifier(t)
			for n := 0; n < len(rep); n++ {
				if _, _, err := v.Verify(rep[:n], Expectation{URI: "/t"}); !errors.Is(err, ErrMalformed) {
					t.Fatalf("%s: prefix of %d/%d bytes: err = %v, want ErrMalformed", ac.name, n, len(rep), err)
				}
			}
		}
	}
}

// TestVerifyRejectsAlgorithmSwap pins that a representation whose header
// names another algorithm than the key registered for its kid is refused
// before any signature check (no algorithm confusion).
func TestVerifyRejectsAlgorithmSwap(t *testing.T) {
	// ES256 key registered for kid "es-1"; the attacker signs EdDSA under it.
	rep := mustSign(t, newTestSigner(t, edAttacker, algCases[1].kid), "/a", 0, []byte("x"))
	_, _, err := newTestVerifier(t).Verify(rep, Expectation{URI: "/a"})
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

// signRaw signs a COSE_Sign1 with arbitrary protected parameters, as a
// buggy or hostile peer holding a trusted key might.
func signRaw(t *testing.T, h cose.ProtectedHeader, payload []byte) []byte {
	t.Helper()
	cs, err := cose.NewSigner(cose.AlgorithmEdDSA, edPriv)
	if err != nil {
		t.Fatal(err)
	}
	h[cose.HeaderLabelAlgorithm] = cose.AlgorithmEdDSA
	rep, err := cose.Sign1(rand.Reader, cs, cose.Headers{Protected: h}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestVerifyRejectsValidlySignedMalformedHeaders(t *testing.T) {
	kid := algCases[0].kid
	full := func() cose.ProtectedHeader {
		return cose.ProtectedHeader{
			cose.HeaderLabelKeyID:       kid,
			cose.HeaderLabelContentType: 0,
			HeaderLabelURI:              "/a",
			HeaderLabelCounter:          1,
			HeaderLabelTime:             t0.Unix(),
		}
	}
	cases := []struct {
		name   string
		mutate func(cose.ProtectedHeader)
	}{
		{"no URI", func(h cose.ProtectedHeader) { delete(h, HeaderLabelURI) }},
		{"no counter", func(h cose.ProtectedHeader) { delete(h, HeaderLabelCounter) }},
		{"no time", func(h cose.ProtectedHeader) { delete(h, HeaderLabelTime) }},
		{"no content format", func(h cose.ProtectedHeader) { delete(h, cose.HeaderLabelContentType) }},
		{"no kid", func(h cose.ProtectedHeader) { delete(h, cose.HeaderLabelKeyID) }},
		{"URI as bstr", func(h cose.ProtectedHeader) { h[HeaderLabelURI] = []byte("/a") }},
		{"negative counter", func(h cose.ProtectedHeader) { h[HeaderLabelCounter] = -1 }},
		{"content format as text", func(h cose.ProtectedHeader) { h[cose.HeaderLabelContentType] = "text/plain" }},
		{"content format above 65535", func(h cose.ProtectedHeader) { h[cose.HeaderLabelContentType] = 70000 }},
		{"unknown critical parameter", func(h cose.ProtectedHeader) {
			h[int64(-70000)] = 1
			h[cose.HeaderLabelCritical] = []any{int64(-70000)}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := full()
			c.mutate(h)
			_, _, err := newTestVerifier(t).Verify(signRaw(t, h, []byte("x")), Expectation{URI: "/a"})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
	t.Run("control: complete header verifies", func(t *testing.T) {
		if _, _, err := newTestVerifier(t).Verify(signRaw(t, full(), []byte("x")), Expectation{URI: "/a"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestVerifyMetaOnAuthenticatedRejection(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	_, meta, err := newTestVerifier(t).Verify(mustSign(t, s, "/a", 0, nil), Expectation{URI: "/b"})
	if !errors.Is(err, ErrWrongResource) || meta.URI != "/a" || meta.Counter != 1 {
		t.Fatalf("err %v, meta %+v", err, meta)
	}
}

// TestReplayRecordIsPerKIDAndResource pins that counters of one signer on
// one resource do not make another resource's or signer's older counters
// stale.
func TestReplayRecordIsPerKIDAndResource(t *testing.T) {
	ed := newTestSigner(t, edPriv, algCases[0].kid)
	es := newTestSigner(t, esPriv, algCases[1].kid)
	b1 := mustSign(t, ed, "/b", 0, nil) // counter 1
	a2 := mustSign(t, ed, "/a", 0, nil) // counter 2
	esA := mustSign(t, es, "/a", 0, nil)
	v := newTestVerifier(t)
	for _, r := range []struct {
		rep []byte
		uri string
	}{{a2, "/a"}, {b1, "/b"}, {esA, "/a"}} {
		if _, _, err := v.Verify(r.rep, Expectation{URI: r.uri}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReplayEvictionNeverAdmitsReplay fills a small replay record past its
// bound and checks that replays of evicted entries are still refused.
func TestReplayEvictionNeverAdmitsReplay(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	v := NewVerifier(VerifierConfig{MaxEntries: 2})
	if err := v.AddKey(algCases[0].kid, edPriv.Public()); err != nil {
		t.Fatal(err)
	}
	var reps [][]byte
	for i, uri := range []string{"/r0", "/r1", "/r2", "/r3"} {
		reps = append(reps, mustSign(t, s, uri, 0, nil))
		if _, _, err := v.Verify(reps[i], Expectation{URI: uri}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.replay.entries); n != 2 {
		t.Fatalf("%d replay entries, want 2", n)
	}
	for i, uri := range []string{"/r0", "/r1", "/r2", "/r3"} {
		if _, _, err := v.Verify(reps[i], Expectation{URI: uri}); !errors.Is(err, ErrStale) {
			t.Errorf("replay of %s: err = %v, want ErrStale", uri, err)
		}
	}
	// A newer representation of an evicted resource is accepted again.
	if _, _, err := v.Verify(mustSign(t, s, "/r0", 0, nil), Expectation{URI: "/r0"}); err != nil {
		t.Fatal(err)
	}
	v.RemoveKey(algCases[0].kid)
	if len(v.replay.entries) != 0 || len(v.replay.floor) != 0 {
		t.Errorf("RemoveKey left %d entries, %d floors", len(v.replay.entries), len(v.replay.floor))
	}
}

func TestVerifierBoundsKeys(t *testing.T) {
	v := NewVerifier(VerifierConfig{MaxKeys: 1})
	if err := v.AddKey([]byte("a"), edPriv.Public()); err != nil {
		t.Fatal(err)
	}
	if err := v.AddKey([]byte("a"), edAttacker.Public()); err != nil {
		t.Fatalf("replacing a key: %v", err)
	}
	if err := v.AddKey([]byte("b"), edPriv.Public()); !errors.Is(err, ErrConfig) {
		t.Fatalf("second key: err = %v, want ErrConfig", err)
	}
	g := testGroupKey
	if err := v.AddGroupKey(g); err != nil {
		t.Fatal(err)
	}
	g.ID = []byte("other")
	if err := v.AddGroupKey(g); !errors.Is(err, ErrConfig) {
		t.Fatalf("second group key: err = %v, want ErrConfig", err)
	}
}

func TestSignerConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  SignerConfig
		err  error
	}{
		{"no key", SignerConfig{KID: []byte("k")}, ErrConfig},
		{"no kid", SignerConfig{Key: edPriv}, ErrConfig},
		{"long kid", SignerConfig{Key: edPriv, KID: make([]byte, MaxKIDLen+1)}, ErrConfig},
		{"counter exhausted", SignerConfig{Key: edPriv, KID: []byte("k"), Counter: MaxCounter}, ErrCounterExhausted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewSigner(c.cfg); !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
		})
	}
}

func TestSignerStopsAtMaxCounter(t *testing.T) {
	s, err := NewSigner(SignerConfig{Key: edPriv, KID: []byte("k"), Counter: MaxCounter - 1})
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(VerifierConfig{})
	if err := v.AddKey([]byte("k"), edPriv.Public()); err != nil {
		t.Fatal(err)
	}
	_, meta, err := v.Verify(mustSign(t, s, "/a", 0, nil), Expectation{URI: "/a"})
	if err != nil || meta.Counter != MaxCounter {
		t.Fatalf("last counter: %d, %v", meta.Counter, err)
	}
	if _, err := s.Sign("/a", 0, nil); !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("err = %v, want ErrCounterExhausted", err)
	}
}

func TestSignRejectsBadURI(t *testing.T) {
	s := newTestSigner(t, edPriv, []byte("k"))
	for _, uri := range []string{"", "\xff"} {
		if _, err := s.Sign(uri, 0, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("Sign(%q): err = %v, want ErrConfig", uri, err)
		}
	}
}

// TestConcurrentSignVerify issues counters from many goroutines and checks
// they are distinct; run under -race it also checks the locking.
func TestConcurrentSignVerify(t *testing.T) {
	s := newTestSigner(t, edPriv, algCases[0].kid)
	v := newTestVerifier(t)
	const n = 32
	var wg sync.WaitGroup
	counters := make([]uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uri := fmt.Sprintf("/r%d", i)
			rep, err := s.Sign(uri, 0, nil)
			if err != nil {
				t.Error(err)
				return
			}
			_, meta, err := v.Verify(rep, Expectation{URI: uri})
			if err != nil {
				t.Error(err)
				return
			}
			counters[i] = meta.Counter
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, c := range counters {
		if c == 0 || seen[c] {
			t.Fatalf("counters %v not distinct and non-zero", counters)
		}
		seen[c] = true
	}
}

// TestVerifyTimeWindowExtremes pins that signed times at the ends of the
// int64 range fall outside any window: Duration arithmetic saturates there,
// and a negated saturated Duration once let a far-future time through.
func TestVerifyTimeWindowExtremes(t *testing.T) {
	for _, ts := range []int64{math.MaxInt64, math.MinInt64, math.MaxInt64 - 62135596801, t0.Unix() + 31, t0.Unix() - 3601} {
		h := cose.ProtectedHeader{
			cose.HeaderLabelKeyID:       algCases[0].kid,
			cose.HeaderLabelContentType: 0,
			HeaderLabelURI:              "/a",
			HeaderLabelCounter:          1,
			HeaderLabelTime:             ts,
		}
		_, _, err := newTestVerifier(t).Verify(signRaw(t, h, []byte{}), Expectation{URI: "/a", MaxAge: time.Hour, MaxSkew: 30 * time.Second, Now: t0})
		if !errors.Is(err, ErrStale) {
			t.Errorf("time %d: err = %v, want ErrStale", ts, err)
		}
	}
	// The window's edges are inside.
	for _, ts := range []int64{t0.Unix() + 30, t0.Unix() - 3600} {
		h := cose.ProtectedHeader{
			cose.HeaderLabelKeyID:       algCases[0].kid,
			cose.HeaderLabelContentType: 0,
			HeaderLabelURI:              "/a",
			HeaderLabelCounter:          1,
			HeaderLabelTime:             ts,
		}
		if _, _, err := newTestVerifier(t).Verify(signRaw(t, h, []byte{}), Expectation{URI: "/a", MaxAge: time.Hour, MaxSkew: 30 * time.Second, Now: t0}); err != nil {
			t.Errorf("time %d: %v", ts, err)
		}
	}
}
