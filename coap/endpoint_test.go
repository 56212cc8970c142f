package coap

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// liveHeap is the heap the last of two collections found live.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func listen(t *testing.T) *UDP {
	t.Helper()
	u, err := ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func serve(t *testing.T, cfg EndpointConfig) (*Endpoint, netip.AddrPort) {
	t.Helper()
	u := listen(t)
	e := NewEndpoint(u, cfg)
	t.Cleanup(func() { e.Close() })
	return e, u.LocalAddr()
}

func echo(calls *atomic.Int32, delay time.Duration) Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		calls.Add(1)
		time.Sleep(delay)
		resp := &Message{Code: Content, Payload: append([]byte("echo:"), r.Msg.Payload...)}
		resp.Options = resp.Options.SetUint(ContentFormat, 0)
		return w.WriteResponse(resp)
	})
}

// rawPeer is a bare UDP socket for driving the message layer by hand.
func rawPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exchange(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) *Message {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
	return readMsg(t, c)
}

// readMsg reads the next message a raw peer receives, within 5 s.
func readMsg(t *testing.T, c *net.UDPConn) *Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := m.Decode(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m.Clone()
}

func TestDoGetsPiggybackedResponse(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls, 0)})
	client, _ := serve(t, EndpointConfig{})
	resp, err := client.Do(context.Background(), addr, &Message{Code: POST, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != Content || string(resp.Payload) != "echo:x" || resp.Type != Acknowledgement {
		t.Fatalf("got %v %q", resp, resp.Payload)
	}
}

func TestSlowHandlerGetsEmptyACKThenSeparateResponse(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls, 150*time.Millisecond), AckDelay: 20 * time.Millisecond})
	c := rawPeer(t)
	req := &Message{Type: Confirmable, Code: GET, MID: 7, Token: []byte{1, 2}}
	b, _ := req.Marshal()
	ack := exchange(t, c, addr, b)
	if ack.Type != Acknowledgement || ack.Code != Empty || ack.MID != 7 {
		t.Fatalf("want empty ACK for mid 7, got %v", ack)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	var sep Message
	if err := sep.Decode(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if sep.Type != Confirmable || sep.Code != Content || !bytes.Equal(sep.Token, []byte{1, 2}) {
		t.Fatalf("want CON 2.05 with the request's token, got %v", &sep)
	}
}

func TestDuplicateCONIsAnsweredFromMemoryNotReprocessed(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls, 0)})
	c := rawPeer(t)
	b, _ := (&Message{Type: Confirmable, Code: POST, MID: 99, Token: []byte{9}, Payload: []byte("p")}).Marshal()
	first := exchange(t, c, addr, b)
	second := exchange(t, c, addr, b)
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1 (RFC 7252 §4.5)", calls.Load())
	}
	f, _ := first.Marshal()
	s, _ := second.Marshal()
	if !bytes.Equal(f, s) {
		t.Fatalf("duplicate got a different answer:\n%x\n%x", f, s)
	}
}

func TestEmptyCONIsAnsweredWithReset(t *testing.T) {
	_, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32), 0)})
	c := rawPeer(t)
	rst := exchange(t, c, addr, []byte{0x40, 0x00, 0x12, 0x34})
	if rst.Type != Reset || rst.MID != 0x1234 || rst.Code != Empty {
		t.Fatalf("CoAP ping: want RST mid 0x1234, got %v", rst)
	}
}

func TestMalformedCONIsResetAndCounted(t *testing.T) {
	e, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32), 0)})
	c := rawPeer(t)
	// CON GET with an option length nibble of 15: a format error.
	rst := exchange(t, c, addr, []byte{0x40, 0x01, 0x00, 0x05, 0x1f})
	if rst.Type != Reset || rst.MID != 5 {
		t.Fatalf("want RST for mid 5, got %v", rst)
	}
	// A malformed NON is dropped silently.
	c.WriteToUDPAddrPort([]byte{0x50, 0x01, 0x00, 0x06, 0x1f}, addr)
	c.WriteToUDPAddrPort([]byte{0xff}, addr)
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Malformed < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.Stats().Malformed; got != 3 {
		t.Fatalf("malformed = %d, want 3", got)
	}
}

func TestCONIsRetransmittedThenTimesOut(t *testing.T) {
	silent := rawPeer(t)
	to := silent.LocalAddr().(*net.UDPAddr).AddrPort()
	p := Params{AckTimeout: 10 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 3}
	client, _ := serve(t, EndpointConfig{Params: p})
	_, err := client.Do(context.Background(), to, &Message{Code: GET})
	if err != ErrTimeout {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	// 1 transmission + MAX_RETRANSMIT retransmissions reached the peer.
	silent.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	n := 0
	var mid uint16
	for {
		k, _, err := silent.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		var m Message
		m.Decode(buf[:k])
		if n > 0 && m.MID != mid {
			t.Fatal("a retransmission must keep the message ID")
		}
		mid = m.MID
		n++
	}
	if n != 4 || client.Stats().Retransmissions != 3 {
		t.Fatalf("peer saw %d copies, stats %+v; want 4 and 3 retransmissions", n, client.Stats())
	}
}

func TestDoCancelledByContext(t *testing.T) {
	silent := rawPeer(t)
	client, _ := serve(t, EndpointConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := client.Do(ctx, silent.LocalAddr().(*net.UDPAddr).AddrPort(), &Message{Code: GET})
	if err != context.DeadlineExceeded {
		t.Fatalf("err = %v", err)
	}
}

func TestManyExchangesInFlightAtOnce(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls, 50*time.Millisecond)})
	client, _ := serve(t, EndpointConfig{})
	const n = 64
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			_, err := client.Do(context.Background(), addr, &Message{Code: GET})
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Serialised, 64 handlers of 50 ms would take 3.2 s; in parallel they
	// take one handler's time. Generous bound: this asserts concurrency,
	// not speed.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("64 slow exchanges took %v: they are serialised", d)
	}
}

func TestDedupMemoryIsBounded(t *testing.T) {
	e, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32), 0), DedupLimit: 100})
	c := rawPeer(t)
	for mid := 0; mid < 1000; mid++ {
		code := GET // answered and forgotten (idempotent)...
		if mid%2 == 1 {
			code = POST // ...or remembered
		}
		b, _ := (&Message{Type: NonConfirmable, Code: code, MID: uint16(mid)}).Marshal()
		c.WriteToUDPAddrPort(b, addr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Received < 1000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	e.mu.Lock()
	n, q := len(e.seen), e.seenQ.len()
	e.mu.Unlock()
	if n > 100 || q > 101 {
		t.Fatalf("remembered %d exchanges (queue %d) with DedupLimit 100", n, q)
	}
}

func TestCloneSharesNothing(t *testing.T) {
	m := &Message{Type: Confirmable, Code: GET, MID: 1, Token: []byte{1, 2}, Payload: []byte("p")}
	for i := 0; i < 12; i++ { // more than fit in the clone's own allocation
		m.Options = m.Options.Insert(URIPath, []byte{byte('a' + i)})
	}
	// Many options, up to eight, up to four with few bytes (a tinyBox),
	// and four with too many bytes for one.
	long := &Message{Code: GET, Token: []byte{9}, Options: Options{{ID: URIPath, Value: []byte("a")}}, Payload: make([]byte, 100)}
	for _, src := range []*Message{m, {Code: GET, Options: m.Options[:6]}, {Code: GET, Token: []byte{7}, Options: m.Options[:3], Payload: []byte("x")}, long} {
		c := src.Clone()
		c.Options = c.Options.Insert(URIQuery, []byte("q"))
		c.Options[0].Value[0] = 'z'
		c.Token = append(c.Token, 'z')
		c.Payload = append(c.Payload, 'z')
		if src.Options[0].Value[0] == 'z' || len(src.Options) == len(c.Options) || len(src.Token) == len(c.Token) {
			t.Fatal("the clone shares memory with the original")
		}
		// Growing the clone's token or payload writes over none of its
		// other bytes.
		for i, o := range src.Options[1:] {
			if !bytes.Equal(c.Options[i+1].Value, o.Value) && c.Options[i+1].ID != URIQuery {
				t.Fatalf("option %d of the clone is %q, want %q", i+1, c.Options[i+1].Value, o.Value)
			}
		}
		if string(c.Options[0].Value) != "z" || !bytes.Equal(c.Payload[:len(src.Payload)], src.Payload) {
			t.Fatalf("clone options %v payload %q", c.Options, c.Payload)
		}
	}
}

// A piggybacked response is the request's only if it carries the request's
// token (RFC 7252 §5.3.2): an ACK with the right message ID and another
// token neither ends the exchange nor is taken as its response.
func TestPiggybackedResponseWithAnotherTokenIsNotTaken(t *testing.T) {
	srv := rawPeer(t)
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	client, _ := serve(t, EndpointConfig{Params: Params{AckTimeout: 200 * time.Millisecond, MaxRetransmit: 4}})
	go func() {
		buf := make([]byte, 1500)
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var req Message
		req.Decode(buf[:n])
		wrong := &Message{Type: Acknowledgement, Code: Content, MID: req.MID, Token: []byte("other"), Payload: []byte("not yours")}
		b, _ := wrong.Marshal()
		srv.WriteToUDPAddrPort(b, from)
		// The retransmission gets the real answer.
		n, from, err = srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req.Decode(buf[:n])
		right := &Message{Type: Acknowledgement, Code: Content, MID: req.MID, Token: req.Token, Payload: []byte("yours")}
		b, _ = right.Marshal()
		srv.WriteToUDPAddrPort(b, from)
	}()
	resp, err := client.Do(context.Background(), to, &Message{Code: GET})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Payload) != "yours" {
		t.Fatalf("took %q, a response with another token", resp.Payload)
	}
}

// failingTransport fails every read at once, as a broken transport might.
type failingTransport struct{ reads atomic.Int64 }

func (f *failingTransport) ReadFrom([]byte) (int, netip.AddrPort, error) {
	f.reads.Add(1)
	return 0, netip.AddrPort{}, errors.New("transport broken")
}
func (f *failingTransport) WriteTo(context.Context, []byte, netip.AddrPort) error { return nil }
func (f *failingTransport) Close() error                                          { return nil }

// A transport whose reads fail at once does not spin the reader: it
// pauses, longer with each failure, and Close still ends it.
func TestFailingReadsBackOff(t *testing.T) {
	f := &failingTransport{}
	e := NewEndpoint(f, EndpointConfig{})
	time.Sleep(300 * time.Millisecond)
	e.Close()
	// Pauses of 1, 2, 4, ... 100 ms: about ten reads in 300 ms; a
	// reader that does not pause makes hundreds of thousands.
	if n := f.reads.Load(); n > 50 {
		t.Fatalf("%d reads in 300 ms", n)
	}
}
