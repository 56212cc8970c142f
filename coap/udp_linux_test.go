//go:build linux

package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// readAll reads want datagrams through b and returns them with the number
// of reads it took.
func readAll(t *testing.T, b Batch, want int) (got map[string]netip.AddrPort, reads int) {
	t.Helper()
	got = make(map[string]netip.AddrPort)
	for len(got) < want {
		n, err := b.Read()
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		reads++
		for i := range n {
			d, from, truncated := b.Datagram(i)
			if truncated {
				t.Fatalf("datagram %q truncated", d)
			}
			got[string(d)] = from
		}
	}
	return got, reads
}

func TestBatchReadsWaitingDatagramsTogether(t *testing.T) {
	u := listen(t)
	defer u.Close()
	a, c := rawPeer(t), rawPeer(t)
	want := map[string]netip.AddrPort{}
	for i := range 5 {
		from := a
		if i%2 == 1 {
			from = c
		}
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := from.WriteToUDPAddrPort([]byte(msg), u.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		want[msg] = from.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	b, err := u.NewBatch(8)
	if err != nil {
		t.Fatal(err)
	}
	got, reads := readAll(t, b, len(want))
	for msg, from := range want {
		if got[msg] != from {
			t.Errorf("%q: from %v, want %v", msg, got[msg], from)
		}
	}
	// All five were queued before the first read (loopback delivers
	// within sendto), so reading one at a time would take five reads.
	if reads >= len(want) {
		t.Errorf("%d datagrams took %d reads", len(want), reads)
	}
}

func TestBatchNoLargerThanAsked(t *testing.T) {
	u := listen(t)
	defer u.Close()
	c := rawPeer(t)
	for i := range 3 {
		c.WriteToUDPAddrPort([]byte{byte(i)}, u.LocalAddr())
	}
	b, err := u.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	for total := 0; total < 3; {
		n, err := b.Read()
		if err != nil {
			t.Fatal(err)
		}
		if n > 2 {
			t.Fatalf("a batch of 2 read %d datagrams", n)
		}
		total += n
	}
}

func TestBatchReportsIPv4PeersOfDualStackSocketAsIPv4(t *testing.T) {
	u, err := ListenUDPNetwork(context.Background(), "udp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	c := rawPeer(t)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), u.LocalAddr().Port())
	if _, err := c.WriteToUDPAddrPort([]byte("v4"), to); err != nil {
		t.Fatal(err)
	}
	b, err := u.NewBatch(4)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, b, 1)
	if from, want := got["v4"], c.LocalAddr().(*net.UDPAddr).AddrPort(); from != want || !from.Addr().Is4() {
		t.Errorf("peer %v, want %v", from, want)
	}
}

func TestBatchReadEndsWhenClosed(t *testing.T) {
	u := listen(t)
	b, err := u.NewBatch(4)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := b.Read(); done <- err }()
	time.Sleep(20 * time.Millisecond) // let it block
	u.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked after Close")
	}
}

// The endpoint reads its UDP socket in batches: requests that are
// waiting when it looks are taken by one read and all answered.
func TestEndpointReadsWaitingRequestsInOneBatch(t *testing.T) {
	u := listen(t)
	c := rawPeer(t)
	const n = 6
	for i := range n {
		req := &Message{Type: Confirmable, Code: GET, MID: uint16(100 + i), Token: []byte{byte(i)}}
		b, _ := req.Marshal()
		if _, err := c.WriteToUDPAddrPort(b, u.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	var calls atomic.Int32
	e := NewEndpoint(u, EndpointConfig{Handler: echo(&calls, 0)})
	defer e.Close()
	mids := map[uint16]bool{}
	for range n {
		m := readMsg(t, c)
		if m.Type != Acknowledgement || m.Code != Content {
			t.Fatalf("got %v %v, want a piggybacked 2.05", m.Type, m.Code)
		}
		mids[m.MID] = true
	}
	if len(mids) != n {
		t.Fatalf("answers for %d distinct requests, want %d", len(mids), n)
	}
	s := e.Stats()
	if s.Received != n || s.Reads >= n {
		t.Errorf("received %d datagrams in %d reads; want %d in fewer reads", s.Received, s.Reads, n)
	}
}

// WriteTo reaches peers of both families from a dual-stack socket, IPv4
// ones as IPv4-mapped addresses, and the peers see the socket's port.
func TestWriteToFromDualStackSocket(t *testing.T) {
	u, err := ListenUDPNetwork(context.Background(), "udp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	v4 := rawPeer(t)
	v6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer v6.Close()
	for _, p := range []*net.UDPConn{v4, v6} {
		to := p.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := u.WriteTo(context.Background(), []byte("hello "+to.String()), to); err != nil {
			t.Fatalf("write to %v: %v", to, err)
		}
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 100)
		n, from, err := p.ReadFromUDPAddrPort(b)
		if err != nil {
			t.Fatalf("%v: %v", to, err)
		}
		if string(b[:n]) != "hello "+to.String() || from.Port() != u.LocalAddr().Port() {
			t.Errorf("%v got %q from %v", to, b[:n], from)
		}
	}
}

func TestWriteToAfterCloseFails(t *testing.T) {
	u := listen(t)
	c := rawPeer(t)
	u.Close()
	err := u.WriteTo(context.Background(), []byte("x"), c.LocalAddr().(*net.UDPAddr).AddrPort())
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// A link-local peer's zone names an interface, which the runtime's path
// turns into a scope ID: the direct path leaves such peers to it.
func TestDirectSendLeavesZonedPeersToTheRuntime(t *testing.T) {
	u, err := ListenUDPNetwork(context.Background(), "udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if sent, err := u.raw.sendto([]byte("x"), netip.MustParseAddrPort("[fe80::1%lo]:5683")); sent || err != nil {
		t.Fatalf("zoned peer: sent %v, %v; want it left to the runtime", sent, err)
	}
	if sent, err := u.raw.sendto([]byte("x"), u.LocalAddr()); !sent || err != nil {
		t.Fatalf("plain peer: sent %v, %v", sent, err)
	}
}
