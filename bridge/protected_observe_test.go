package bridge

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// rawUDP is a test peer that reads and writes datagrams by hand.
type rawUDP struct {
	t *testing.T
	c *net.UDPConn
}

func newRawUDP(t *testing.T) *rawUDP {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawUDP{t: t, c: c}
}

func (r *rawUDP) addr() netip.AddrPort { return netip.MustParseAddrPort(r.c.LocalAddr().String()) }

func (r *rawUDP) send(m *coap.Message, to netip.AddrPort) {
	r.t.Helper()
	b, err := m.Marshal()
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.WriteToUDPAddrPort(b, to); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next datagram within d, decoded, and who sent it; nil
// when none came.
func (r *rawUDP) read(d time.Duration) (*coap.Message, netip.AddrPort) {
	r.t.Helper()
	buf := make([]byte, 2048)
	r.c.SetReadDeadline(time.Now().Add(d))
	n, from, err := r.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}
	}
	var m coap.Message
	if err := m.Decode(buf[:n]); err != nil {
		r.t.Fatal(err)
	}
	return m.Clone(), from
}

// When the last observer of a protected observation leaves, the proxy
// cannot cancel it with a request: resending the client's registration
// with Observe=1 would replay its OSCORE Partial IV (RFC 8613
// §4.1.3.5.1). It forgets the observation instead, and the origin's next
// notification gets an RST (RFC 7641 §3.6).
func TestProtectedObservationIsForgottenNotCancelled(t *testing.T) {
	p := startProxy(t, nil)
	origin, cl := newRawUDP(t), newRawUDP(t)
	oscore := []byte{0x09, 0x14}
	reg := &coap.Message{Type: coap.Confirmable, Code: coap.FETCH, MID: 1, Token: []byte("tk"),
		Options: proxyURI("coap://" + origin.addr().String() + "/"), Payload: []byte{0xde, 0xad}}
	reg.Options = reg.Options.SetUint(coap.Observe, 0).Insert(coap.OSCORE, oscore)
	cl.send(reg, p.Addrs()[0])

	up, proxy := origin.read(5 * time.Second)
	if up == nil || !bytes.Equal(up.Payload, reg.Payload) {
		t.Fatalf("the origin got %v", up)
	}
	first := &coap.Message{Type: coap.Acknowledgement, Code: coap.Changed, MID: up.MID, Token: up.Token, Payload: []byte{0xbe, 0xef}}
	first.Options = first.Options.SetUint(coap.Observe, 1).Insert(coap.OSCORE, nil)
	origin.send(first, proxy)
	if resp, _ := cl.read(5 * time.Second); resp == nil || !bytes.Equal(resp.Payload, first.Payload) {
		t.Fatalf("the client got %v", resp)
	}

	// A notification; the client rejects it with RST and so leaves.
	n := &coap.Message{Type: coap.NonConfirmable, Code: coap.Changed, MID: 2, Token: up.Token, Payload: []byte{1}}
	n.Options = n.Options.SetUint(coap.Observe, 2).Insert(coap.OSCORE, nil)
	origin.send(n, proxy)
	got, _ := cl.read(5 * time.Second)
	if got == nil || !bytes.Equal(got.Payload, n.Payload) {
		t.Fatalf("the client got %v, not the notification", got)
	}
	cl.send(&coap.Message{Type: coap.Reset, MID: got.MID}, p.Addrs()[0])
	testutil.Eventually(t, "the observer to leave on its RST", func() bool { return p.hub.Stats().Observers == 0 })

	// No cancellation request reaches the origin.
	if m, _ := origin.read(500 * time.Millisecond); m != nil {
		t.Fatalf("the origin got %v after the last observer left", m)
	}
	// Its next notification is rejected.
	n.MID, n.Options = 3, n.Options.SetUint(coap.Observe, 3)
	n.Type = coap.Confirmable
	origin.send(n, proxy)
	if m, _ := origin.read(5 * time.Second); m == nil || m.Type != coap.Reset || m.MID != 3 {
		t.Fatalf("the next notification got %v, not an RST", m)
	}
}
