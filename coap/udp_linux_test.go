//go:build linux

package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/opaque-edge/gatewayd/internal/testutil"
	"golang.org/x/sys/unix"
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
	// Close while it blocks in the kernel, not before it reads.
	testutil.Eventually(t, "the reader to block", func() bool { return blockedIn("coap.(*mmsgBatch).Read") })
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
	e := NewEndpoint(u, EndpointConfig{Handler: echo(&calls)})
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

// resident counts the pages of b (page-aligned) that are in memory.
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// A flood of large datagrams must not leave a reader holding its 8×64 KiB
// of slots: once the socket is empty, the pages the datagrams touched go
// back to the kernel, and the next datagrams are read as before.
func TestBatchGivesBackThePagesOfLargeDatagramsWhenIdle(t *testing.T) {
	u := listen(t)
	defer u.Close()
	b, err := u.NewBatch(8)
	if err != nil {
		t.Fatal(err)
	}
	r := b.(*mmsgBatch)
	defer r.Close()
	c := rawPeer(t)
	big := bytes.Repeat([]byte{0xa5}, 60<<10)
	for range 8 {
		if _, err := c.WriteToUDPAddrPort(big, u.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < 8; {
		n, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if d, _, _ := r.Datagram(i); !bytes.Equal(d, big) {
				t.Fatalf("datagram %d: %d bytes, not the %d sent", got+i, len(d), len(big))
			}
		}
		got += n
	}
	pages := len(r.mem) / os.Getpagesize()
	before := resident(t, r.mem)
	if before < pages*3/4 {
		t.Fatalf("%d of %d pages resident after eight 60 KiB datagrams: they did not fill the slots", before, pages)
	}
	// The next Read finds nothing waiting: it gives the pages back, then
	// waits for the datagram sent below.
	done := make(chan []byte, 1)
	go func() {
		if _, err := r.Read(); err != nil {
			done <- nil
			return
		}
		d, _, _ := r.Datagram(0)
		done <- bytes.Clone(d)
	}()
	testutil.Eventually(t, "the idle reader to give its pages back", func() bool { return r.releases.Load() > 0 })
	if after := resident(t, r.mem); after > 8 {
		t.Fatalf("%d of %d pages still resident once the reader was idle (were %d)", after, pages, before)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("small"), u.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if d := <-done; string(d) != "small" {
		t.Fatalf("read %q after the release", d)
	}
}

// A reader's 8×64 KiB of slots are no part of the Go heap: the collector
// would count them as live and let the heap grow by as much again before
// collecting, whether or not a datagram ever touched them.
func TestBatchSlotsAreOutsideTheGoHeap(t *testing.T) {
	u := listen(t)
	defer u.Close()
	before := liveHeap()
	var bs []Batch
	for range 4 {
		b, err := u.NewBatch(8)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	grown := int64(liveHeap()) - int64(before)
	for _, b := range bs {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if grown > 64<<10 {
		t.Fatalf("four batch readers grew the live heap by %d KiB; their slots are 2 MiB", grown>>10)
	}
}

// blockedIn reports whether a goroutine waits for I/O (the network
// poller) inside fn, a function name as a stack trace gives it.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
