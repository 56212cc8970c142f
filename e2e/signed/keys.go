package signed

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
)

// PEM block types written and accepted.
const (
	pemPrivateKey = "PRIVATE KEY" // PKCS #8
	pemPublicKey  = "PUBLIC KEY"  // PKIX SubjectPublicKeyInfo
)

// maxKeyFile bounds what the file readers load; a PEM key is a few hundred
// bytes.
const maxKeyFile = 64 << 10

// GenerateKey returns a new Ed25519 private key read from rnd (nil means
// crypto/rand).
func GenerateKey(rnd io.Reader) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("signed: generate key: %w", err)
	}
	return priv, nil
}

// KeyID derives a key ID from a public key: the first 8 bytes of the
// SHA-256 of its PKIX encoding. Any unique ID works; this one needs no
// registry.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	if _, err := AlgorithmOf(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	sum := sha256.Sum256(der)
	return sum[:8], nil
}

// MarshalPrivateKey encodes an Ed25519 or P-256 key as a PKCS #8 "PRIVATE
// KEY" PEM block.
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	if _, err := AlgorithmOf(key); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParsePrivateKey decodes the first PEM block of data, which must be a
// PKCS #8 "PRIVATE KEY" holding an Ed25519 or P-256 key.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPrivateKey {
		return nil, fmt.Errorf("%w: no %q PEM block", ErrConfig, pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key type %T", ErrConfig, k)
	}
	if _, err := AlgorithmOf(s); err != nil {
		return nil, err
	}
	return s, nil
}

// MarshalPublicKey encodes an Ed25519 or P-256 public key as a PKIX
// "PUBLIC KEY" PEM block.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	if _, err := AlgorithmOf(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// ParsePublicKey decodes the first PEM block of data, which must be a PKIX
// "PUBLIC KEY" holding an Ed25519 or P-256 key.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPublicKey {
		return nil, fmt.Errorf("%w: no %q PEM block", ErrConfig, pemPublicKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if _, err := AlgorithmOf(k); err != nil {
		return nil, err
	}
	return k, nil
}

// WritePrivateKeyFile writes key to a new file at path with mode 0600. It
// refuses to replace an existing file (the error wraps fs.ErrExist), so a
// key is never overwritten by accident.
func WritePrivateKeyFile(path string, key crypto.Signer) error {
	b, err := MarshalPrivateKey(key)
	if err != nil {
		return err
	}
	return writeNew(path, b, 0o600)
}

// WritePublicKeyFile writes pub to a new file at path with mode 0644.
func WritePublicKeyFile(path string, pub crypto.PublicKey) error {
	b, err := MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	return writeNew(path, b, 0o644)
}

// ReadPrivateKeyFile reads a key written by WritePrivateKeyFile. Like ssh,
// it refuses a file that group or others can access (ErrKeyFileMode).
func ReadPrivateKeyFile(path string) (crypto.Signer, error) {
	b, err := readKeyFile(path, true)
	if err != nil {
		return nil, err
	}
	return ParsePrivateKey(b)
}

// ReadPublicKeyFile reads a key written by WritePublicKeyFile.
func ReadPublicKeyFile(path string) (crypto.PublicKey, error) {
	b, err := readKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(b)
}

func readKeyFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signed: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("signed: %w", err)
	}
	if private && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrKeyFileMode, path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("signed: %w", err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrConfig, path, maxKeyFile)
	}
	return b, nil
}

// writeNew creates path exclusively, writes b, syncs and closes; on any
// failure it removes what it created.
func writeNew(path string, b []byte, mode os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("signed: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	// The umask can only clear bits, but be explicit about the result.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("signed: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("signed: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("signed: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("signed: %w", err)
	}
	return nil
}
