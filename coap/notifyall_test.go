package coap

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// NotifyAll sends one notification to each observer, with its own token
// and message ID, NONs in batches; a CON goes through Notify and is
// acknowledged as usual.
func TestNotifyAllReachesEveryObserver(t *testing.T) {
	var mu sync.Mutex
	var writers []NotifyWriter
	e, addr := serve(t, EndpointConfig{Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		nw, ok := w.(NotifyWriter)
		if !ok {
			return Errorf(InternalServerError, "the writer cannot notify")
		}
		mu.Lock()
		writers = append(writers, nw)
		mu.Unlock()
		return w.WriteResponse(&Message{Code: Content, Payload: []byte("0")})
	})})
	const n = 50
	peers := make([]*net.UDPConn, n)
	for i := range peers {
		peers[i] = rawPeer(t)
		req := &Message{Type: Confirmable, Code: GET, MID: uint16(i), Token: []byte{byte(i), 0xaa}}
		b, _ := req.Marshal()
		if resp := exchange(t, peers[i], addr, b); resp.Code != Content {
			t.Fatalf("registration %d: %v", i, resp.Code)
		}
	}
	// A CON notification may be retransmitted if the machine is slow to
	// deliver its ACK; what is counted is first transmissions. And a
	// response is counted after it is sent, so possibly after its client
	// has it: counting starts once all fifty responses are counted.
	firsts := func() uint64 { s := e.Stats(); return s.Sent - s.Retransmissions }
	testutil.Eventually(t, "every registration answered", func() bool { return firsts() == n })
	sentBefore := firsts()
	ns := make([]Notification, n)
	acked := make(chan error, 1)
	mu.Lock()
	for i, w := range writers {
		ns[i] = Notification{W: w, Resp: &Message{Code: Content, Payload: []byte("1")}, CON: i == 0}
	}
	mu.Unlock()
	ns[0].Done = func(err error) { acked <- err }
	NotifyAll(ns)
	seen := map[netip.AddrPort]bool{}
	for i, c := range peers {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("observer %d: %v", i, err)
		}
		var m Message
		if err := m.Decode(buf[:k]); err != nil {
			t.Fatal(err)
		}
		if string(m.Payload) != "1" || len(m.Token) != 2 || m.Token[1] != 0xaa || from != addr {
			t.Fatalf("observer %d got %v %q token %x from %v", i, m.Type, m.Payload, m.Token, from)
		}
		want := NonConfirmable
		if int(m.Token[0]) == 0 {
			want = Confirmable
			ack, _ := (&Message{Type: Acknowledgement, MID: m.MID}).Marshal()
			c.WriteToUDPAddrPort(ack, addr)
		}
		if m.Type != want {
			t.Fatalf("observer %d: %v, want %v", m.Token[0], m.Type, want)
		}
		seen[netip.MustParseAddrPort(c.LocalAddr().String())] = true
	}
	if len(seen) != n {
		t.Fatalf("%d observers reached, want %d", len(seen), n)
	}
	if err := <-acked; err != nil {
		t.Fatalf("CON notification: %v", err)
	}
	if got := firsts() - sentBefore; got != n {
		t.Fatalf("%d datagrams sent (retransmissions aside), want %d", got, n)
	}
	for _, x := range ns {
		if x.Err != nil {
			t.Fatal(x.Err)
		}
	}
}

// A dual-stack socket sends a batch to an IPv4 peer as IPv4-mapped (on a
// host without IPv6, an IPv4 socket is tested instead).
func TestWriteBatchFromDualStackSocket(t *testing.T) {
	u, err := ListenUDPNetwork(context.Background(), "udp", "[::]:0")
	if err != nil {
		t.Log("no IPv6 socket here; testing an IPv4 one:", err)
		u = listen(t)
	}
	defer u.Close()
	c := rawPeer(t)
	to := netip.MustParseAddrPort(c.LocalAddr().String())
	n, err := u.WriteBatch(context.Background(), []Datagram{{B: []byte("a"), To: to}, {B: []byte("b"), To: to}})
	if err != nil || n != 2 {
		t.Fatalf("sent %d: %v", n, err)
	}
	for _, want := range []string{"a", "b"} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		k, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:k]) != want {
			t.Fatalf("got %q %v, want %q", buf[:k], err, want)
		}
	}
}
