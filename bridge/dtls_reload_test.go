package bridge

import (
	"context"
	"crypto/tls"
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

// The client CAs, too, are read again on Reload: after client_ca_file is
// rewritten with another CA, a certificate from the new CA is accepted
// and one from the old CA refused, without a restart; a PSK client is
// asked for no certificate throughout. A listener that asks for client
// certificates cannot stop asking: without client_ca_file it needs a
// restart, and it goes on checking with the CAs it has.
func TestReloadRenewsClientCAs(t *testing.T) {
	dir := t.TempDir()
	cert, key, psk, cas := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert.key"), filepath.Join(dir, "psk"), filepath.Join(dir, "clients.pem")
	server := selfSigned(t, dir, "cert")
	if err := os.WriteFile(psk, []byte("client:psk-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// client returns a DTLS client with a certificate that CA name
	// issued; the CA itself is written to dir/name.pem.
	client := func(name string) *dtls.Config {
		ca, caKey := testpeer.Issue(t, dir, name, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil, nil)
		c, k := testpeer.Issue(t, dir, name+"-client", &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject: pkix.Name{CommonName: name + " client"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
		return &dtls.Config{RootCAs: server, ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}},
			CipherSuites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}}
	}
	fromA, fromB := client("ca-a"), client("ca-b")
	useCA := func(name string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name+".pem"))
		if err == nil {
			err = os.WriteFile(cas, b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	withPSK := &dtls.Config{PSK: func([]byte) ([]byte, error) { return []byte("psk-key"), nil }, PSKIdentityHint: []byte("client"),
		CipherSuites: []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}}
	noCert := &dtls.Config{RootCAs: server, ServerName: "127.0.0.1",
		CipherSuites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}}

	useCA("ca-a")
	p := startProxy(t, func(c *Config) {
		c.Proxy.Listen = []string{"dtls://" + freePort(t)}
		c.Proxy.PSKFile, c.Proxy.CertFile, c.Proxy.KeyFile, c.Proxy.ClientCAFile = psk, cert, key, cas
	})
	to := net.UDPAddrFromAddrPort(p.Addrs()[0])
	expect := func(when string, accepted, refused []*dtls.Config) {
		t.Helper()
		for i, c := range accepted {
			if err := handshake(t, to, c); err != nil {
				t.Fatalf("%s: client %d refused: %v", when, i, err)
			}
		}
		for i, c := range refused {
			if err := handshake(t, to, c); err == nil {
				t.Fatalf("%s: client %d accepted", when, i)
			}
		}
	}
	expect("CA A", []*dtls.Config{fromA, withPSK}, []*dtls.Config{fromB, noCert})

	useCA("ca-b")
	cfg := p.chain.Load().cfg
	if restart, err := p.Reload(cfg); err != nil || len(restart) != 0 {
		t.Fatalf("Reload with other client CAs: restart %v, err %v", restart, err)
	}
	expect("CA B after Reload", []*dtls.Config{fromB, withPSK}, []*dtls.Config{fromA, noCert})

	cfg.Proxy.ClientCAFile = ""
	restart, err := p.Reload(cfg)
	if err != nil || !slices.Contains(restart, "proxy.listen/psk_file/cert_file/key_file/client_ca_file") {
		t.Fatalf("Reload without client_ca_file: restart %v, err %v", restart, err)
	}
	expect("no client_ca_file, restart pending", []*dtls.Config{fromB, withPSK}, []*dtls.Config{fromA, noCert})
}
