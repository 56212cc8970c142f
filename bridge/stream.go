package bridge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/opaque-edge/gatewayd/coap/stream"
)

// streamListener is one tcp://, tls://, ws:// or wss:// listener: CoAP
// over a reliable transport (RFC 8323), served by the same chain as the
// datagram endpoints.
type streamListener struct {
	label  string // the listen entry
	scheme string
	addr   netip.AddrPort
	s      *stream.Server
}

// tlsKeys is the certificate the TLS listeners present and the CAs of
// their clients', swapped whole by Reload for new handshakes as the DTLS
// listeners' keys are.
type tlsKeys struct {
	cur atomic.Pointer[tls.Config] // tls://
	ws  atomic.Pointer[tls.Config] // wss://
}

// set takes the certificate and client CAs of k. With client CAs a
// client must present a certificate from one of them: there is no PSK
// over TLS, so the rule of the DTLS listeners (PSK, or a certificate
// from client_ca_file) leaves the certificate.
func (t *tlsKeys) set(k DTLSKeys) {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// RFC 8323 §8.2: a coaps+tcp endpoint on a port other than 5684
		// must be ALPN enabled; "coap" is its identifier.
		NextProtos: []string{"coap"},
	}
	if k.Certificate != nil {
		c.Certificates = []tls.Certificate{*k.Certificate}
	}
	if k.ClientCAs != nil {
		c.ClientCAs = k.ClientCAs
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	// coaps+ws is a WebSocket, an HTTP/1.1 upgrade (RFC 8323 §4, RFC 6455
	// §4.1): "coap" is not its ALPN identifier, and a browser, which
	// offers h2 and http/1.1, would get no_application_protocol.
	ws := c.Clone()
	ws.NextProtos = []string{"http/1.1"}
	t.cur.Store(c)
	t.ws.Store(ws)
}

// config is a listener's tls.Config, for wss:// with ws: each handshake
// takes the current keys.
func (t *tlsKeys) config(ws bool) *tls.Config {
	cur := &t.cur
	if ws {
		cur = &t.ws
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: cur.Load().NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cur.Load(), nil
		},
	}
}

// streamConfig is the stream listeners' connection settings from
// [proxy].
func (p *Proxy) streamConfig(label string) stream.Config {
	pc := p.cfg.Proxy
	return stream.Config{
		Handler:          p.Handler(),
		Inline:           p.inline,
		MaxMessageSize:   pc.MaxMessageSize,
		Keepalive:        pc.Keepalive.Duration,
		MaxInflight:      pc.MaxInflightPerClient,
		MaxConns:         pc.MaxConnections,
		MaxHandshakes:    pc.MaxHandshakes,
		WSOrigins:        pc.WSOrigins,
		Accept:           func(peer netip.AddrPort) bool { return contains(p.chain.Load().clients, peer.Addr()) },
		Logger:           p.log.With("component", "stream", "listen", label),
		HandshakeTimeout: 0,
	}
}

// listenStream serves one stream listener on ln, bound from la or passed
// by systemd.
func (p *Proxy) listenStream(ctx context.Context, label string, la listenAddr, ln net.Listener) error {
	if ln == nil {
		var lc net.ListenConfig
		var err error
		ln, err = lc.Listen(ctx, "tcp", la.addr.String())
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
	}
	var tc *tls.Config
	if la.scheme == "tls" || la.scheme == "wss" {
		if p.tls == nil {
			keys, err := p.cfg.Proxy.dtlsKeys()
			if err != nil {
				ln.Close()
				return fmt.Errorf("bridge: %w", err)
			}
			p.tls = &tlsKeys{}
			p.tls.set(keys)
		}
		tc = p.tls.config(la.scheme == "wss")
	}
	s := stream.NewServer(p.streamConfig(label))
	var err error
	if la.scheme == "ws" || la.scheme == "wss" {
		err = s.ServeWS(ln, la.path, tc)
	} else {
		err = s.Serve(ln, tc)
	}
	if err != nil {
		ln.Close()
		s.Close()
		return fmt.Errorf("bridge: %w", err)
	}
	addr := la.addr
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		addr = a.AddrPort()
	}
	p.streams = append(p.streams, &streamListener{label: label, scheme: la.scheme, addr: addr, s: s})
	p.log.Info("listening", "component", "proxy", "scheme", la.scheme, "addr", addr, "listen", label)
	return nil
}

// StreamAddrs are the bound addresses of the tcp://, tls://, ws:// and
// wss:// listeners, in the order of the config.
func (p *Proxy) StreamAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(p.streams))
	for i, l := range p.streams {
		out[i] = l.addr
	}
	return out
}
