package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/opaque-edge/gatewayd/coap"
)

// Bounds of a DTLS listener. A datagram that looks like a ClientHello
// costs a handshake slot until the handshake ends or times out, so slots
// are few and short; sessions end when idle, so a client that changed its
// port (NAT rebinding, a reboot) does not hold one for ever.
const (
	maxDTLSSessions   = 1024
	maxDTLSHandshakes = 128
	handshakeTimeout  = 2 * time.Second
	sessionIdle       = 5 * time.Minute
	dtlsReadBuffer    = 16 << 10 // a DTLS record's plaintext is at most 2^14 bytes
)

// DTLS is a coap.Transport over a DTLS 1.2 listener, with pre-shared
// keys (RFC 7252 §9.1.3.1), certificates (§9.1.3.3) or both. Each session
// gets one reader goroutine; datagrams from all sessions meet in one
// queue.
type DTLS struct {
	l    net.Listener
	log  *slog.Logger
	in   chan dgram
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	hs   chan struct{} // handshake slots

	mu    sync.Mutex
	conns map[netip.AddrPort]session // guarded by mu

	keys atomic.Pointer[DTLSKeys] // read at each handshake; SetKeys swaps it
}

type dgram struct {
	b    []byte
	from netip.AddrPort
}

// session is one established DTLS session and who its peer proved to be.
type session struct {
	c  net.Conn
	id string // coap.Request.Identity of its requests
}

var (
	_ coap.Transport      = (*DTLS)(nil)
	_ coap.PeerIdentifier = (*DTLS)(nil)
)

// DTLSKeys is what a DTLS listener authenticates with: pre-shared keys by
// identity, a certificate, or both; at least one.
type DTLSKeys struct {
	PSK         map[string][]byte
	Certificate *tls.Certificate
	// ClientCAs, when set with Certificate, makes a certificate from one
	// of these CAs a requirement for clients that do not use a PSK.
	ClientCAs *x509.CertPool
}

// Cipher suites: RFC 7252's mandatory ones (§9.1.3.1
// TLS_PSK_WITH_AES_128_CCM_8, §9.1.3.3 TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
// their GCM forms, and ECDHE_RSA for an RSA certificate. pion accepts only
// those the keys can serve, and picks the first of the client's list that
// it accepts: the client's preference decides.
var dtlsSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
}

// ListenDTLS binds a DTLS listener that authenticates with keys.
func ListenDTLS(ctx context.Context, addr netip.AddrPort, keys DTLSKeys, log *slog.Logger) (*DTLS, error) {
	d := &DTLS{log: log, in: make(chan dgram, 256), done: make(chan struct{}), hs: make(chan struct{}, maxDTLSHandshakes), conns: map[netip.AddrPort]session{}}
	d.keys.Store(&keys)
	cfg := &dtls.Config{CipherSuites: dtlsSuites}
	if len(keys.PSK) > 0 {
		cfg.PSK = func(hint []byte) ([]byte, error) {
			k, ok := d.keys.Load().PSK[string(hint)]
			if !ok {
				return nil, fmt.Errorf("bridge: dtls: unknown PSK identity %q", hint)
			}
			return k, nil
		}
		cfg.PSKIdentityHint = []byte("gatewayd")
	}
	if keys.Certificate != nil {
		cfg.GetCertificate = func(*dtls.ClientHelloInfo) (*tls.Certificate, error) {
			return d.keys.Load().Certificate, nil
		}
		if keys.ClientCAs != nil {
			// A certificate is required (a PSK client is asked for none)
			// and checked here against the CAs of the moment, so that
			// SetKeys can change them; pion would keep the pool it was
			// given.
			cfg.ClientAuth, cfg.VerifyPeerCertificate = dtls.RequireAnyClientCert, d.verifyClient
		}
	}
	if cfg.PSK == nil && cfg.GetCertificate == nil {
		return nil, fmt.Errorf("bridge: dtls listen %v: no pre-shared key and no certificate", addr)
	}
	l, err := dtls.Listen("udp", net.UDPAddrFromAddrPort(addr), cfg)
	if err != nil {
		return nil, fmt.Errorf("bridge: dtls listen %v: %w", addr, err)
	}
	d.l = l
	d.wg.Add(1)
	go d.accept()
	return d, nil
}

// verifyClient checks a client's certificate chain, whose key pion has
// seen it hold (CertificateVerify), against the client CAs now in force:
// a chain to one of them, valid now, for client authentication.
func (d *DTLS) verifyClient(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return errors.New("bridge: dtls: no client certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("bridge: dtls: client certificate: %w", err)
		}
		certs[i] = c
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         d.keys.Load().ClientCAs,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("bridge: dtls: client certificate %q: %w", certs[0].Subject, err)
	}
	return nil
}

// SetKeys replaces the pre-shared keys, the certificate and the client
// CAs that new handshakes use; sessions already set up go on. The kinds
// of key stay what the listener was started with, since they decide its
// cipher suites and whether it asks for client certificates: keys with a
// PSK where there was none (or none where there was one), a certificate
// or client CAs likewise, are refused.
func (d *DTLS) SetKeys(keys DTLSKeys) error {
	if !d.sameKind(keys) {
		return errors.New("bridge: dtls: a different kind of key needs a new listener")
	}
	d.keys.Store(&keys)
	return nil
}

// sameKind reports whether SetKeys would take keys.
func (d *DTLS) sameKind(keys DTLSKeys) bool {
	old := d.keys.Load()
	return (len(keys.PSK) > 0) == (len(old.PSK) > 0) && (keys.Certificate != nil) == (old.Certificate != nil) &&
		(keys.ClientCAs != nil) == (old.ClientCAs != nil)
}

// LocalAddr is the bound address.
func (d *DTLS) LocalAddr() netip.AddrPort {
	return d.l.Addr().(*net.UDPAddr).AddrPort()
}

func (d *DTLS) accept() {
	defer d.wg.Done()
	for {
		c, err := d.l.Accept()
		if err != nil {
			select {
			case <-d.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Debug("accept failed", "err", err)
			continue
		}
		select {
		case d.hs <- struct{}{}:
		default:
			// Too many handshakes under way: drop this one; a real client
			// retries its ClientHello.
			c.Close()
			continue
		}
		d.wg.Add(1)
		go d.session(c)
	}
}

// session completes the handshake within handshakeTimeout, then reads the
// session until it fails, idles out or the listener closes.
func (d *DTLS) session(c net.Conn) {
	defer d.wg.Done()
	peer := c.RemoteAddr().(*net.UDPAddr).AddrPort()
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	go func() { // Close ends a handshake under way

		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var err error
	if dc, ok := c.(*dtls.Conn); ok {
		err = dc.HandshakeContext(ctx)
	}
	cancel()
	<-d.hs
	if err != nil {
		d.log.Debug("handshake failed", "peer", peer, "err", err)
		c.Close()
		return
	}
	id := d.identity(c)
	d.mu.Lock()
	if len(d.conns) >= maxDTLSSessions {
		d.mu.Unlock()
		d.log.Warn("too many DTLS sessions; refusing", "peer", peer)
		c.Close()
		return
	}
	select {
	case <-d.done:
		d.mu.Unlock()
		c.Close()
		return
	default:
	}
	if old, ok := d.conns[peer]; ok {
		old.c.Close()
	}
	d.conns[peer] = session{c: c, id: id}
	d.mu.Unlock()
	d.read(c, peer)
}

func (d *DTLS) read(c net.Conn, peer netip.AddrPort) {
	defer func() {
		d.mu.Lock()
		if d.conns[peer].c == c {
			delete(d.conns, peer)
		}
		d.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, dtlsReadBuffer)
	for {
		c.SetReadDeadline(time.Now().Add(sessionIdle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		select {
		case d.in <- dgram{append([]byte(nil), buf[:n]...), peer}:
		case <-d.done:
			return
		}
	}
}

// ReadFrom returns the next datagram from any session.
func (d *DTLS) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case g := <-d.in:
		return copy(b, g.b), g.from, nil
	case <-d.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

// WriteTo sends on the peer's session.
func (d *DTLS) WriteTo(_ context.Context, b []byte, to netip.AddrPort) error {
	d.mu.Lock()
	s, ok := d.conns[to]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("bridge: dtls: no session with %v", to)
	}
	_, err := s.c.Write(b)
	return err
}

// PeerIdentity is the identity the peer at addr authenticated with in
// the handshake of the session it holds now. A datagram read before a new
// handshake from the same address and port replaced the session is
// credited to the new one: both came from that address, and each
// handshake proved its key.
func (d *DTLS) PeerIdentity(addr netip.AddrPort) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[addr].id
}

// identity names who completed the handshake on c: "psk:" and the PSK
// identity it used, or "cn:" and the common name of its certificate,
// which verifyClient has checked against the client CAs. Without client
// CAs no certificate is asked for, and one a client sends unasked proves
// nothing, so it names no one.
func (d *DTLS) identity(c net.Conn) string {
	dc, ok := c.(*dtls.Conn)
	if !ok {
		return ""
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return ""
	}
	if len(st.IdentityHint) > 0 {
		// On the server side pion keeps the client's PSK identity here
		// (the ClientKeyExchange of RFC 4279 §2).
		return "psk:" + string(st.IdentityHint)
	}
	if len(st.PeerCertificates) == 0 || d.keys.Load().ClientCAs == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(st.PeerCertificates[0])
	if err != nil || cert.Subject.CommonName == "" {
		return ""
	}
	return "cn:" + cert.Subject.CommonName
}

// Close ends the listener and every session, and waits for their
// goroutines.
func (d *DTLS) Close() error {
	var err error
	d.once.Do(func() {
		close(d.done)
		err = d.l.Close()
		d.mu.Lock()
		for _, s := range d.conns {
			s.c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return err
}
