package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"

	"github.com/opaque-edge/gatewayd/coap"
)

// listen starts the configured listeners, or serves the sockets systemd
// passed (activated) in place of the udp:// ones, each an endpoint into
// the chain.
func (p *Proxy) listen(ctx context.Context, activated []net.PacketConn) error {
	accept := func(peer netip.AddrPort) bool {
		return contains(p.chain.Load().clients, peer.Addr()) || p.isProbe(peer)
	}
	serve := func(label, scheme string, t coap.Transport, addr netip.AddrPort) {
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
	// Sockets passed by systemd (gatewayd.socket) replace the udp://
	// listeners: the unit's ListenDatagram lines are then what counts.
	for i, pc := range activated {
		uc, ok := pc.(*net.UDPConn)
		if !ok {
			return fmt.Errorf("bridge: activated socket %d is not UDP", i)
		}
		u := coap.NewUDP(uc)
		serve(fmt.Sprintf("systemd:coap/%d", i), "udp", u, u.LocalAddr())
	}
	if len(activated) > 0 {
		p.logActivation(p.cfg.Proxy.Listen)
	}
	for _, l := range p.cfg.Proxy.Listen {
		la, _ := parseListen(l)
		scheme, addr := la.scheme, la.addr
		switch {
		case scheme == "udp" && len(activated) > 0:
			continue
		case scheme == "udp":
			u, err := coap.ListenUDP(ctx, addr.String())
			if err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			serve(l, scheme, u, u.LocalAddr())
		case scheme == "dtls":
			keys, err := p.cfg.Proxy.dtlsKeys()
			if err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			d, err := ListenDTLS(ctx, addr, keys, p.log.With("component", "dtls"))
			if err != nil {
				return err
			}
			p.dtls = append(p.dtls, d)
			serve(l, scheme, d, d.LocalAddr())
		case la.stream():
			if err := p.listenStream(ctx, l, la, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// logActivation says which sockets serve when systemd passed some: they
// replace the configuration's udp:// listeners, and an operator who edited
// listen and not gatewayd.socket should hear that the edit has no effect.
func (p *Proxy) logActivation(listen []string) {
	var used, ignored []string
	same := true
	for _, a := range p.addrs {
		used = append(used, a.String())
	}
	var configured []netip.AddrPort
	for _, l := range listen {
		if la, _ := parseListen(l); la.scheme == "udp" {
			ignored = append(ignored, l)
			configured = append(configured, la.addr)
			same = same && slices.Contains(p.addrs, la.addr)
		}
	}
	same = same && len(configured) == len(p.addrs)
	if same {
		p.log.Info("serving the sockets systemd passed (gatewayd.socket) in place of the udp:// listeners",
			"component", "proxy", "sockets", used)
		return
	}
	p.log.Warn("serving the sockets systemd passed (gatewayd.socket), not the udp:// listeners of the configuration; "+
		"to serve other addresses, change ListenDatagram in gatewayd.socket",
		"component", "proxy", "sockets", used, "not_bound", ignored)
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
