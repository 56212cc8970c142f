package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Probe asks each UDP listener for /.well-known/core over loopback and
// reports whether all answered 2.05: the socket readers, the message layer
// and the chain are alive. systemd's watchdog is fed only while it passes.
// The probe's own socket is let through the clients filter.
func (p *Proxy) Probe(ctx context.Context) error {
	e, err := p.prober(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for i, addr := range p.addrs {
		if p.servers[i].Secure() {
			continue // a DTLS listener would need a handshake; its reader shares the chain
		}
		a := addr.Addr()
		if a.IsUnspecified() {
			a = netip.IPv6Loopback()
			if addr.Addr().Is4() {
				a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			}
		}
		req := &coap.Message{Code: coap.GET}
		req.Options = req.Options.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))
		resp, err := e.Do(ctx, netip.AddrPortFrom(a, addr.Port()), req)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("bridge: probe %v: %w", addr, err))
		case resp.Code != coap.Content:
			errs = append(errs, fmt.Errorf("bridge: probe %v: got %v", addr, resp.Code))
		}
	}
	return errors.Join(errs...)
}

func (p *Proxy) prober(ctx context.Context) (*coap.Endpoint, error) {
	p.probeMu.Lock()
	defer p.probeMu.Unlock()
	if p.probe != nil {
		return p.probe, nil
	}
	u, err := coap.ListenUDP(ctx, "[::]:0")
	if err != nil {
		if u, err = coap.ListenUDP(ctx, "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("bridge: probe socket: %w", err)
		}
	}
	p.probePort.Store(uint32(u.LocalAddr().Port()))
	p.probe = coap.NewEndpoint(u, coap.EndpointConfig{Params: coap.Params{AckTimeout: 500 * time.Millisecond, MaxRetransmit: 2}})
	return p.probe, nil
}

// isProbe reports the proxy's own probe socket: its port, from loopback
// or from the address of one of the listeners it probes (a datagram to a
// LAN address of this host comes from that address).
func (p *Proxy) isProbe(peer netip.AddrPort) bool {
	port := p.probePort.Load()
	if port == 0 || uint32(peer.Port()) != port {
		return false
	}
	a := peer.Addr().Unmap()
	if a.IsLoopback() {
		return true
	}
	for _, l := range p.addrs {
		if l.Addr().Unmap() == a {
			return true
		}
	}
	return false
}
