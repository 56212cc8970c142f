package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/pion/dtls/v3"

	"github.com/opaque-edge/gatewayd/coap"
)

// maxDTLSSessions bounds the sessions a DTLS listener keeps.
const maxDTLSSessions = 1024

// DTLS is a coap.Transport over a DTLS 1.2 listener with pre-shared keys
// (RFC 7252 §9.1.3.1: TLS_PSK_WITH_AES_128_CCM_8). Each session gets one
// reader goroutine; datagrams from all sessions meet in one queue.
type DTLS struct {
	l    net.Listener
	log  *slog.Logger
	in   chan dgram
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu    sync.Mutex
	conns map[netip.AddrPort]net.Conn // guarded by mu
}

type dgram struct {
	b    []byte
	from netip.AddrPort
}

var _ coap.Transport = (*DTLS)(nil)

// ListenDTLS binds a DTLS listener; keys maps PSK identities to keys.
func ListenDTLS(ctx context.Context, addr netip.AddrPort, keys map[string][]byte, log *slog.Logger) (*DTLS, error) {
	cfg := &dtls.Config{
		PSK: func(hint []byte) ([]byte, error) {
			k, ok := keys[string(hint)]
			if !ok {
				return nil, fmt.Errorf("bridge: dtls: unknown PSK identity %q", hint)
			}
			return k, nil
		},
		PSKIdentityHint: []byte("gatewayd"),
		CipherSuites:    []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256},
	}
	l, err := dtls.Listen("udp", net.UDPAddrFromAddrPort(addr), cfg)
	if err != nil {
		return nil, fmt.Errorf("bridge: dtls listen %v: %w", addr, err)
	}
	d := &DTLS{l: l, log: log, in: make(chan dgram, 256), done: make(chan struct{}), conns: map[netip.AddrPort]net.Conn{}}
	d.wg.Add(1)
	go d.accept()
	return d, nil
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
			d.log.Debug("handshake failed", "err", err)
			continue
		}
		peer := c.RemoteAddr().(*net.UDPAddr).AddrPort()
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		d.mu.Lock()
		if len(d.conns) >= maxDTLSSessions {
			d.mu.Unlock()
			d.log.Warn("too many DTLS sessions; refusing", "peer", peer)
			c.Close()
			continue
		}
		if old, ok := d.conns[peer]; ok {
			old.Close()
		}
		d.conns[peer] = c
		d.mu.Unlock()
		d.wg.Add(1)
		go d.read(c, peer)
	}
}

func (d *DTLS) read(c net.Conn, peer netip.AddrPort) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		if d.conns[peer] == c {
			delete(d.conns, peer)
		}
		d.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 2048)
	for {
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
	c, ok := d.conns[to]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("bridge: dtls: no session with %v", to)
	}
	_, err := c.Write(b)
	return err
}

// Close ends the listener and every session, and waits for their
// goroutines.
func (d *DTLS) Close() error {
	var err error
	d.once.Do(func() {
		close(d.done)
		err = d.l.Close()
		d.mu.Lock()
		for _, c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return err
}
