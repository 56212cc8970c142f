package signed

import (
	"errors"
	"testing"

	"github.com/veraison/go-cose"
)

// A generic COSE library that checks a COSE_Sign1's signature accepts a
// signed representation although its crit parameter lists labels the
// library does not know (RFC 9052 §3.1 says such a message must fail), and
// it checks none of the bindings: an object signed for another resource,
// or replayed, verifies just the same. go-cose is such a library. Only
// Verify, or a consumer that checks what Verify checks, refuses them.
func TestGenericCOSELibraryAcceptsAndSkipsTheBindings(t *testing.T) {
	for _, ac := range algCases {
		t.Run(ac.name, func(t *testing.T) {
			s := newTestSigner(t, ac.key, ac.kid)
			temp, err := s.Sign("coap://node7.example/temp", 0, []byte("21.5"))
			if err != nil {
				t.Fatal(err)
			}
			alarm, err := s.Sign("coap://node7.example/alarm", 0, []byte("off"))
			if err != nil {
				t.Fatal(err)
			}
			alg := cose.AlgorithmEdDSA
			if ac.name == "ES256" {
				alg = cose.AlgorithmES256
			}
			generic, err := cose.NewVerifier(alg, ac.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			for name, rep := range map[string][]byte{"temp": temp, "alarm": alarm} {
				var msg cose.Sign1Message
				if err := msg.UnmarshalCBOR(rep); err != nil {
					t.Fatal(err)
				}
				crit, ok := msg.Headers.Protected[cose.HeaderLabelCritical].([]any)
				if !ok || len(crit) != 3 {
					t.Fatalf("%s: crit is %v, want the three labels of this package", name, msg.Headers.Protected[cose.HeaderLabelCritical])
				}
				// go-cose accepts each object, whatever resource it is
				// for, and accepts it again: nothing is checked but the
				// signature. Verify refuses both, below.
				if err := msg.Verify(nil, generic); err != nil {
					t.Fatalf("%s: go-cose refused the object (%v): the README's advice assumes it accepts it", name, err)
				}
				if err := msg.Verify(nil, generic); err != nil {
					t.Fatalf("%s replayed: go-cose refused it: %v", name, err)
				}
			}
			v := newTestVerifier(t)
			want := Expectation{URI: "coap://node7.example/temp", ContentFormat: 0}
			if _, _, err := v.Verify(alarm, want); !errors.Is(err, ErrWrongResource) {
				t.Fatalf("Verify of another resource's object: %v, want ErrWrongResource", err)
			}
			if _, _, err := v.Verify(temp, want); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.Verify(temp, want); !errors.Is(err, ErrStale) {
				t.Fatalf("Verify of a replay: %v, want ErrStale", err)
			}
		})
	}
}
