package bridge

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// to dir/name.pem and dir/name.key, and returns a pool that trusts it.
func selfSigned(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	c, _ := testpeer.Issue(t, dir, name, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool
}

// handshake reports whether a DTLS client with cfg completes a handshake
// with the listener at to.
func handshake(t *testing.T, to net.Addr, cfg *dtls.Config) error {
	t.Helper()
	c, err := dtls.Dial("udp", to.(*net.UDPAddr), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.HandshakeContext(ctx)
}

// A renewed certificate and an edited PSK file, at the same paths, apply
// to the next handshakes on SIGHUP (Reload) without a restart; a
// different kind of key (no certificate any more) is reported as needing
// one and leaves the running keys alone.
func TestReloadRenewsDTLSKeys(t *testing.T) {
	dir := t.TempDir()
	cert, key, psk := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert.key"), filepath.Join(dir, "psk")
	first := selfSigned(t, dir, "cert")
	if err := os.WriteFile(psk, []byte("client:first-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Listen = []string{"dtls://" + port}
		c.Proxy.PSKFile, c.Proxy.CertFile, c.Proxy.KeyFile = psk, cert, key
	})
	to := net.UDPAddrFromAddrPort(p.Addrs()[0])
	trusting := func(pool *x509.CertPool) *dtls.Config {
		return &dtls.Config{RootCAs: pool, ServerName: "127.0.0.1",
			CipherSuites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}}
	}
	withPSK := func(k string) *dtls.Config {
		return &dtls.Config{PSK: func([]byte) ([]byte, error) { return []byte(k), nil }, PSKIdentityHint: []byte("client"),
			CipherSuites: []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}}
	}
	if err := handshake(t, to, trusting(first)); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	if err := handshake(t, to, withPSK("first-key")); err != nil {
		t.Fatalf("first PSK: %v", err)
	}

	second := selfSigned(t, dir, "cert")
	if err := os.WriteFile(psk, []byte("client:second-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := p.chain.Load().cfg
	restart, err := p.Reload(cfg)
	if err != nil || len(restart) != 0 {
		t.Fatalf("Reload with renewed keys: restart %v, err %v", restart, err)
	}
	if err := handshake(t, to, trusting(second)); err != nil {
		t.Fatalf("renewed certificate after Reload: %v", err)
	}
	if err := handshake(t, to, trusting(first)); err == nil {
		t.Fatal("the old certificate is still served after Reload")
	}
	if err := handshake(t, to, withPSK("second-key")); err != nil {
		t.Fatalf("edited PSK after Reload: %v", err)
	}
	if err := handshake(t, to, withPSK("first-key")); err == nil {
		t.Fatal("the old PSK still works after Reload")
	}

	cfg.Proxy.CertFile, cfg.Proxy.KeyFile = "", ""
	restart, err = p.Reload(cfg)
	if err != nil || !slices.Contains(restart, "proxy.listen/psk_file/cert_file/key_file/client_ca_file") {
		t.Fatalf("Reload without the certificate: restart %v, err %v", restart, err)
	}
	if err := handshake(t, to, trusting(second)); err != nil {
		t.Fatalf("the running certificate went away on a Reload that needs a restart: %v", err)
	}
}
