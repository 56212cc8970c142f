package signed

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	priv, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	privPath, pubPath := filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub.pem")
	if err := WritePrivateKeyFile(privPath, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKeyFile(pubPath, priv.Public()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	gotPriv, err := ReadPrivateKeyFile(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Equal(gotPriv) {
		t.Error("private key changed in the round trip")
	}
	gotPub, err := ReadPublicKeyFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(gotPub) {
		t.Error("public key changed in the round trip")
	}
	// The read keys work together.
	kid, err := KeyID(gotPub)
	if err != nil || len(kid) != 8 {
		t.Fatalf("KeyID = %x, %v", kid, err)
	}
	s := newTestSigner(t, gotPriv, kid)
	v := NewVerifier(VerifierConfig{})
	if err := v.AddKey(kid, gotPub); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(mustSign(t, s, "/a", 0, nil), Expectation{URI: "/a"}); err != nil {
		t.Fatal(err)
	}
}

func TestWriteKeyFileRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKeyFile(path, edPriv); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err = %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatalf("existing file changed to %q", b)
	}
}

func TestReadPrivateKeyFileRefusesOpenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := WritePrivateKeyFile(path, edPriv); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKeyFile(path); !errors.Is(err, ErrKeyFileMode) {
		t.Fatalf("err = %v, want ErrKeyFileMode", err)
	}
}

func TestPEMRoundTripES256(t *testing.T) {
	b, err := MarshalPrivateKey(esPriv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if !esPriv.Equal(k) {
		t.Fatal("ES256 key changed")
	}
	pb, err := MarshalPublicKey(esPriv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pb)
	if err != nil {
		t.Fatal(err)
	}
	if !esPriv.PublicKey.Equal(pub.(*ecdsa.PublicKey)) {
		t.Fatal("ES256 public key changed")
	}
}

func TestParseKeyRejects(t *testing.T) {
	pub, err := MarshalPublicKey(edPriv.Public())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := MarshalPrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePrivateKey(pub); !errors.Is(err, ErrConfig) {
		t.Errorf("public PEM as private: err = %v", err)
	}
	if _, err := ParsePublicKey(priv); !errors.Is(err, ErrConfig) {
		t.Errorf("private PEM as public: err = %v", err)
	}
	if _, err := ParsePrivateKey([]byte("garbage")); !errors.Is(err, ErrConfig) {
		t.Errorf("garbage: err = %v", err)
	}
	broken := bytes.Replace(priv, []byte("MC4CAQAw"), []byte("MC4CAQAx"), 1)
	if _, err := ParsePrivateKey(broken); !errors.Is(err, ErrConfig) {
		t.Errorf("broken DER: err = %v", err)
	}
}
