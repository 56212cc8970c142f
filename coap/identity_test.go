package coap

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// identUDP is a UDP transport that claims to have authenticated one peer,
// as a DTLS listener has each of its sessions' peers.
type identUDP struct {
	*UDP
	known netip.AddrPort
}

func (u identUDP) PeerIdentity(addr netip.AddrPort) string {
	if addr == u.known {
		return "psk:alice"
	}
	return ""
}

// A handler sees the identity a PeerIdentifier transport gives the
// request's sender, and none for a peer it does not know.
func TestRequestCarriesTransportIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice, err := ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := NewEndpoint(alice, EndpointConfig{})
	defer ca.Close()
	bob, err := ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb := NewEndpoint(bob, EndpointConfig{})
	defer cb.Close()
	u, err := ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewEndpoint(identUDP{u, alice.LocalAddr()}, EndpointConfig{Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.WriteResponse(&Message{Code: Content, Payload: []byte("[" + r.Identity + "]")})
	})})
	defer srv.Close()
	for _, c := range []struct {
		e    *Endpoint
		want string
	}{{ca, "[psk:alice]"}, {cb, "[]"}} {
		resp, err := c.e.Do(ctx, u.LocalAddr(), &Message{Code: GET})
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.Payload) != c.want {
			t.Errorf("handler saw identity %s, want %s", resp.Payload, c.want)
		}
	}
}
