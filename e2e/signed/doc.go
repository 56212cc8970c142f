// Package signed protects resource representations end to end so that a
// caching proxy or a publish-subscribe broker can store and fan them out but
// can neither forge nor, optionally, read them: requirements R3.1-R3.6 and
// R5.1-R5.6 of draft-hartke-core-e2e-security-reqs-00.
//
// A representation is a COSE_Sign1 object (RFC 9052 §4.2, CoAP Content-Format
// 18) whose protected header binds the payload to the resource URI (R3.2,
// R5.2), the Content-Format of the payload (R3.3, R5.3), a counter that grows
// with every signature plus a timestamp (R3.4, R5.4), and the signer's key
// ID. Signatures are EdDSA (Ed25519) or ES256; being asymmetric, a client or
// subscriber that can verify cannot sign (R3.6, R5.6).
//
// For confidentiality (R3.5, R5.5) a Signer can Seal: the signed object is
// encrypted as a COSE_Encrypt0 object (RFC 9052 §5.2, Content-Format 16)
// under a symmetric group key, sign-then-encrypt. The Verifier opens either
// form.
//
// A Verifier remembers, per key ID and resource, the highest counter it has
// accepted, so a proxy that replays an older representation is caught:
//
//	s, _ := signed.NewSigner(signed.SignerConfig{Key: priv, KID: []byte("srv1")})
//	rep, _ := s.Sign("coap://node1/temp", 0, []byte("21.5"))
//
//	v := signed.NewVerifier(signed.VerifierConfig{})
//	_ = v.AddKey([]byte("srv1"), pub)
//	payload, meta, err := v.Verify(rep, signed.Expectation{URI: "coap://node1/temp", ContentFormat: 0})
//
// The gatewayd proxy never imports this package: it holds no end-to-end keys
// and caches these representations as opaque payloads.
package signed
