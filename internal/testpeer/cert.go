package testpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Issue makes an ECDSA P-256 key and a certificate from tmpl for it,
// valid from an hour ago for an hour, signed by parent with parentKey
// (self-signed when parent is nil). It writes them as PEM to dir/name.pem
// and dir/name.key, the files a DTLS peer loads, and returns both.
func Issue(t *testing.T, dir, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".pem": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: kder},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// PKI is a test CA with a server certificate for 127.0.0.1 and a client
// certificate (common name "client1"), as files in Dir (ca.pem, server.pem,
// server.key, client.pem, client.key) and as values.
type PKI struct {
	Dir            string
	CA             *x509.CertPool
	Server, Client tls.Certificate
}

// NewPKI writes a PKI into a temporary folder.
func NewPKI(t *testing.T) *PKI {
	t.Helper()
	dir := t.TempDir()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	}
	caCert, caKey := Issue(t, dir, "ca", ca, nil, nil)
	srv := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	srv.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	Issue(t, dir, "server", srv, caCert, caKey)
	Issue(t, dir, "client", leaf(3, "client1", x509.ExtKeyUsageClientAuth), caCert, caKey)
	p := &PKI{Dir: dir, CA: x509.NewCertPool()}
	p.CA.AddCert(caCert)
	var err error
	if p.Server, err = tls.LoadX509KeyPair(p.File("server.pem"), p.File("server.key")); err != nil {
		t.Fatal(err)
	}
	if p.Client, err = tls.LoadX509KeyPair(p.File("client.pem"), p.File("client.key")); err != nil {
		t.Fatal(err)
	}
	return p
}

// File is the path of one of the PKI's files.
func (p *PKI) File(name string) string { return filepath.Join(p.Dir, name) }
