package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"

	"github.com/opaque-edge/gatewayd/coap"
)

// OriginConfig is one [[origin]]: the credentials gatewayd presents to an
// origin it reaches over coaps (DTLS), coaps+tcp (TLS) or coaps+ws, and
// the CAs it checks the origin's certificate against.
type OriginConfig struct {
	// URI names the origin: "coaps://host:port", "coaps+tcp://host:port"
	// or "coaps+ws://host:port"; a request's target matches it by scheme,
	// host and port.
	URI string `toml:"uri"`
	// PSKFile holds the pre-shared key gatewayd uses with the origin: one
	// "identity:key" line, as psk_file of [proxy] (DTLS only: RFC 7252
	// §9.1.3.1; there is no TLS-PSK here).
	PSKFile string `toml:"psk_file"`
	// CertFile and KeyFile are the client certificate chain and its key,
	// PEM, presented when the origin asks for one.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// CAFile (PEM) are the CAs whose certificates the origin may present;
	// without it, the host's roots. ServerName is the name its
	// certificate must carry, by default the URI's host.
	CAFile     string `toml:"ca_file"`
	ServerName string `toml:"server_name"`
}

// originKey names an origin: scheme, host as the URI has it (the TLS
// server name and the WebSocket Host), and the address it resolved to.
type originKey struct {
	scheme string
	host   string
	addr   netip.AddrPort
}

// originCreds are an [[origin]]'s credentials, loaded.
type originCreds struct {
	pskIdentity string
	psk         []byte
	cert        *tls.Certificate
	roots       *x509.CertPool // nil: the host's
	serverName  string
}

// secureSchemes are the schemes an [[origin]] may name.
func secureScheme(s string) bool {
	return s == "coaps" || s == "coaps+tcp" || s == "coaps+ws"
}

// originURIKey is how an [[origin]] is found for a target: scheme, host and
// port as the URI has them.
func originURIKey(u *coap.URI) string {
	return fmt.Sprintf("%s://%s:%d", u.Scheme, u.Host, u.Port)
}

// load reads the files of an [[origin]]. Errors name the key at fault.
func (o *OriginConfig) load() (*originCreds, error) {
	u, err := coap.ParseURI(o.URI)
	if err != nil {
		return nil, fmt.Errorf("uri: %w", err)
	}
	if !secureScheme(u.Scheme) {
		return nil, fmt.Errorf("uri %q: scheme must be coaps, coaps+tcp or coaps+ws", o.URI)
	}
	if len(u.Path) > 0 || len(u.Query) > 0 {
		return nil, fmt.Errorf("uri %q: want scheme://host:port, no path", o.URI)
	}
	c := &originCreds{serverName: o.ServerName}
	if c.serverName == "" {
		c.serverName = u.Host
	}
	if o.PSKFile != "" {
		if u.Scheme != "coaps" {
			return nil, fmt.Errorf("psk_file: %s has no pre-shared keys here, only coaps (DTLS)", u.Scheme)
		}
		keys, err := LoadPSK(o.PSKFile)
		if err != nil {
			return nil, fmt.Errorf("psk_file: %w", err)
		}
		if len(keys) != 1 {
			return nil, fmt.Errorf("psk_file: %s: want one identity:key line, got %d", o.PSKFile, len(keys))
		}
		for id, k := range keys {
			c.pskIdentity, c.psk = id, k
		}
	}
	switch {
	case o.CertFile != "" && o.KeyFile == "":
		return nil, errors.New("key_file: cert_file needs its private key")
	case o.KeyFile != "" && o.CertFile == "":
		return nil, errors.New("cert_file: key_file needs its certificate")
	case o.CertFile != "":
		certPEM, err := readKeyFile(o.CertFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file: %w", err)
		}
		keyPEM, err := readKeyFile(o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("cert_file, key_file: %w", err)
		}
		c.cert = &cert
	}
	if o.CAFile != "" {
		pem, err := readKeyFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s: no PEM certificate", o.CAFile)
		}
	}
	return c, nil
}

// loadOrigins loads every [[origin]], keyed by originURIKey.
func loadOrigins(os []OriginConfig) (map[string]*originCreds, error) {
	out := make(map[string]*originCreds, len(os))
	for i := range os {
		c, err := os[i].load()
		if err != nil {
			return nil, fmt.Errorf("origin[%d]: %w", i, err)
		}
		u, _ := coap.ParseURI(os[i].URI)
		k := originURIKey(u)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("origin[%d]: %q named twice", i, os[i].URI)
		}
		out[k] = c
	}
	return out, nil
}

// tlsConfig is what gatewayd checks a coaps+tcp or coaps+ws origin with
// and presents to it (RFC 8323 §9.2: the origin is authenticated by its
// certificate; ALPN "coap", §8.2).
func (c *originCreds) tlsConfig(ws bool) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName, RootCAs: c.roots}
	if !ws {
		tc.NextProtos = []string{"coap"}
	}
	if c.cert != nil {
		tc.Certificates = []tls.Certificate{*c.cert}
	}
	return tc
}
