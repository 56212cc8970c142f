package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/service"
)

// listen starts the configured listeners, each an endpoint into the
// chain, serving the sockets systemd passed (inherited) in place of
// binding the entries they match. It owns the inherited sockets: on an
// error those not yet serving are closed.
func (p *Proxy) listen(ctx context.Context, inherited []service.Socket) error {
	given, err := assign(p.cfg.Proxy.Listen, inherited)
	if err != nil {
		closeSockets(inherited)
		return err
	}
	defer func() {
		for _, s := range given {
			s.Close()
		}
	}()
	for i, l := range p.cfg.Proxy.Listen {
		la, _ := parseListen(l)
		s, ok := given[i]
		delete(given, i) // from here on serving, or closed by its listener
		if ok {
			p.log.Info("serving an inherited socket (socket activation) in place of binding",
				"component", "proxy", "listen", l, "socket", s.Name, "kind", s.Kind(), "addr", s.Addr)
		}
		switch {
		case la.scheme == "udp":
			var u *coap.UDP
			if ok {
				uc, isUDP := s.Packet.(*net.UDPConn)
				if !isUDP {
					s.Close()
					return fmt.Errorf("bridge: inherited socket %q: %T is not a UDP socket", s.Name, s.Packet)
				}
				u = coap.NewUDP(uc)
			} else if u, err = coap.ListenUDP(ctx, la.addr.String()); err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			p.serveDatagram(l, la.scheme, u, u.LocalAddr())
		case la.scheme == "dtls":
			keys, err := p.cfg.Proxy.dtlsKeys()
			if err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			d, err := ListenDTLS(ctx, la.addr, keys, p.log.With("component", "dtls"))
			if err != nil {
				return err
			}
			p.dtls = append(p.dtls, d)
			p.serveDatagram(l, la.scheme, d, d.LocalAddr())
		case la.stream():
			if err := p.listenStream(ctx, l, la, s.Listener); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveDatagram starts the endpoint of a udp:// or dtls:// listener.
func (p *Proxy) serveDatagram(label, scheme string, t coap.Transport, addr netip.AddrPort) {
	accept := func(peer netip.AddrPort) bool {
		return contains(p.chain.Load().clients, peer.Addr()) || p.isProbe(peer)
	}
	e := coap.NewEndpoint(t, coap.EndpointConfig{
		Handler:              coap.HandlerFunc(p.serveChain),
		Local:                p.local,
		Inline:               p.inline,
		Readers:              readers(scheme),
		Secure:               scheme == "dtls",
		Accept:               accept,
		OnAck:                p.amp.onAck,
		MaxInflight:          p.cfg.Proxy.MaxInflight,
		MaxInflightPerClient: p.cfg.Proxy.MaxInflightPerClient,
		ShareMaxAge:          p.cfg.Proxy.Timeout.Duration,
		Logger:               p.log.With("component", "endpoint", "listen", label),
	})
	p.servers = append(p.servers, e)
	p.addrs = append(p.addrs, addr)
	p.labels = append(p.labels, label)
	p.log.Info("listening", "component", "proxy", "scheme", scheme, "addr", addr, "listen", label)
}

// listenAddr is one entry of [proxy] listen.
type listenAddr struct {
	scheme string // udp, dtls, tcp, tls, ws, wss
	addr   netip.AddrPort
	path   string // ws and wss: where the WebSocket endpoint is
}

// stream reports a listener of CoAP over a reliable transport (RFC 8323).
func (l listenAddr) stream() bool {
	switch l.scheme {
	case "tcp", "tls", "ws", "wss":
		return true
	}
	return false
}

// wsPath is where a ws:// or wss:// listener without a path serves
// (RFC 8323 §4, §8.3).
const wsPath = "/.well-known/coap"

func parseListen(s string) (listenAddr, error) {
	u, err := url.Parse(s)
	if err != nil {
		return listenAddr{}, fmt.Errorf("%q: %w", s, err)
	}
	l := listenAddr{scheme: u.Scheme}
	switch u.Scheme {
	case "udp", "dtls", "tcp", "tls":
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return listenAddr{}, fmt.Errorf("%q: want %s://ip:port", s, u.Scheme)
		}
	case "ws", "wss":
		if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return listenAddr{}, fmt.Errorf("%q: want %s://ip:port/path", s, u.Scheme)
		}
		l.path = u.Path
		if l.path == "" {
			l.path = wsPath
		}
	default:
		return listenAddr{}, fmt.Errorf("%q: scheme must be udp, dtls, tcp, tls, ws or wss", s)
	}
	l.addr, err = netip.ParseAddrPort(u.Host)
	if err != nil {
		return listenAddr{}, fmt.Errorf("%q: want %s://ip:port: %w", s, u.Scheme, err)
	}
	return l, nil
}
