package bridge

import (
	"fmt"
	"net/netip"

	"github.com/opaque-edge/gatewayd/internal/service"
)

// WithSockets serves CoAP on sockets someone else bound (systemd socket
// activation, service.Sockets) in place of binding the [proxy] listen
// entries they match. Each socket must match one entry by address and
// kind: a stream socket a tcp://, tls://, ws:// or wss:// entry, a
// datagram socket a udp:// entry; New fails for one that does not, and
// closes all of them. The Proxy owns them from New on.
func WithSockets(s []service.Socket) Option {
	return func(o *options) { o.inherited = s }
}

// assign pairs each inherited socket with the listen entry of its address
// and kind, by index into listen. An entry is never bound beside a socket
// passed for its address, so a socket that fits no entry is an error, not
// a warning: serving it would leave the entry unserved or serve it twice.
func assign(listen []string, socks []service.Socket) (map[int]service.Socket, error) {
	out := map[int]service.Socket{}
	for _, s := range socks {
		i, err := match(listen, s)
		if err != nil {
			return nil, err
		}
		if prev, dup := out[i]; dup {
			return nil, fmt.Errorf("bridge: inherited sockets %q and %q both serve listen entry %s", prev.Name, s.Name, listen[i])
		}
		out[i] = s
	}
	return out, nil
}

// match finds the listen entry that s serves.
func match(listen []string, s service.Socket) (int, error) {
	var wrong string
	for i, l := range listen {
		la, err := parseListen(l)
		if err != nil || !sameAddr(la.addr, s.Addr) {
			continue
		}
		switch {
		case s.Stream() && la.stream(), !s.Stream() && la.scheme == "udp":
			return i, nil
		case !s.Stream() && la.scheme == "dtls":
			// pion/dtls binds the socket it listens on; it cannot take
			// one that is already bound.
			return 0, fmt.Errorf("bridge: inherited datagram socket %q (%v) matches %s, but dtls:// listeners bind their own socket: "+
				"remove its ListenDatagram= from the socket unit", s.Name, s.Addr, l)
		default:
			wrong = l
		}
	}
	if wrong != "" {
		want := "a datagram socket (ListenDatagram=)" // the entry is of the other kind
		if !s.Stream() {
			want = "a stream socket (ListenStream=)"
		}
		return 0, fmt.Errorf("bridge: inherited %s socket %q (%v) matches listen entry %s, which needs %s", s.Kind(), s.Name, s.Addr, wrong, want)
	}
	kinds := "udp://"
	if s.Stream() {
		kinds = "tcp://, tls://, ws:// or wss://"
	}
	return 0, fmt.Errorf("bridge: inherited %s socket %q (%v) matches no [proxy] listen entry: add a %s entry with its address, "+
		"or remove it from the socket unit", s.Kind(), s.Name, s.Addr, kinds)
}

// sameAddr reports whether a listen entry's address names the socket
// bound at got. The unspecified addresses stand for each other: systemd
// binds "ListenStream=5683" to [::]:5683, which serves IPv4 as well
// (BindIPv6Only=default), and an operator may well write 0.0.0.0.
func sameAddr(want, got netip.AddrPort) bool {
	if want.Port() != got.Port() {
		return false
	}
	w, g := want.Addr().Unmap(), got.Addr().Unmap()
	return w == g || w.IsUnspecified() && g.IsUnspecified()
}

func closeSockets(socks []service.Socket) {
	for _, s := range socks {
		s.Close()
	}
}
