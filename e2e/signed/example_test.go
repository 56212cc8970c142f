package signed_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/opaque-edge/gatewayd/e2e/signed"
)

func Example() {
	priv, err := signed.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	kid, _ := signed.KeyID(priv.Public())
	gk := signed.GroupKey{ID: []byte("g1"), Alg: signed.AlgAESCCM1664128, Key: bytes.Repeat([]byte{1}, 16)}

	// The server signs; the proxy caches the bytes.
	s, _ := signed.NewSigner(signed.SignerConfig{Key: priv, KID: kid})
	rep, _ := s.Seal("coap://[2001:db8::7]/temp", 0, []byte("21.5"), gk)

	// The client verifies.
	v := signed.NewVerifier(signed.VerifierConfig{})
	_ = v.AddKey(kid, priv.Public())
	_ = v.AddGroupKey(gk)
	want := signed.Expectation{URI: "coap://[2001:db8::7]/temp", ContentFormat: 0, MaxAge: time.Minute, MaxSkew: 30 * time.Second}
	payload, meta, err := v.Verify(rep, want)
	fmt.Printf("%s counter=%d encrypted=%v err=%v\n", payload, meta.Counter, meta.Encrypted, err)

	// The proxy serves the same representation for another resource, or
	// again later: both are caught.
	_, _, err = v.Verify(rep, signed.Expectation{URI: "coap://[2001:db8::7]/humidity"})
	fmt.Println(errors.Is(err, signed.ErrWrongResource))
	_, _, err = v.Verify(rep, want)
	fmt.Println(errors.Is(err, signed.ErrStale))
	// Output:
	// 21.5 counter=1 encrypted=true err=<nil>
	// true
	// true
}
