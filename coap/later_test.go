package coap

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// laterHandler answers through Later from a goroutine of its own, once
// released if release is not nil, as a proxy answers from its upstream's
// reader.
func laterHandler(inline *atomic.Int32, release <-chan struct{}) Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		if Inline(ctx) {
			inline.Add(1)
		}
		payload := append([]byte(nil), r.Msg.Payload...)
		return Later(ctx, func() {
			go func() {
				if release != nil {
					<-release
				}
				if string(payload) == "fail" {
					Finish(w, Errorf(GatewayTimeout, "no answer"))
					return
				}
				w.WriteResponse(&Message{Code: Content, Payload: append([]byte("later:"), payload...)})
				Finish(w, nil)
			}()
		})
	})
}

func TestInlineHandlerAnswersLater(t *testing.T) {
	var inline atomic.Int32
	_, addr := serve(t, EndpointConfig{
		Handler: laterHandler(&inline, nil),
		Inline:  func(r *Request) bool { return r.Msg.Code == GET },
	})
	client, _ := serve(t, EndpointConfig{})
	resp, err := client.Do(context.Background(), addr, &Message{Code: GET, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != Content || string(resp.Payload) != "later:x" {
		t.Fatalf("got %v %q", resp.Code, resp.Payload)
	}
	if inline.Load() != 1 {
		t.Fatalf("GET ran inline %d times, want 1", inline.Load())
	}
	// Not picked by Inline: a worker serves it, and Later works there too.
	resp, err = client.Do(context.Background(), addr, &Message{Code: POST, Payload: []byte("y")})
	if err != nil || string(resp.Payload) != "later:y" {
		t.Fatalf("POST: %v %v", resp, err)
	}
	if inline.Load() != 1 {
		t.Fatal("POST ran on the reader")
	}
	// An error given to Finish is answered as a handler's error would be.
	resp, err = client.Do(context.Background(), addr, &Message{Code: GET, Payload: []byte("fail")})
	if err != nil || resp.Code != GatewayTimeout || string(resp.Payload) != "no answer" {
		t.Fatalf("fail: %v %v", resp, err)
	}
}

// A CON answered later than AckDelay gets its empty ACK first, and the
// answer as a separate response (§5.2.2), as from a slow handler.
func TestLaterAnswerAfterAckDelayIsSeparate(t *testing.T) {
	var inline atomic.Int32
	clk := fakeClock()
	release := make(chan struct{})
	_, addr := serve(t, EndpointConfig{
		Handler:  laterHandler(&inline, release),
		Inline:   func(*Request) bool { return true },
		AckDelay: 20 * time.Millisecond,
		Clock:    clk,
	})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	c := rawPeer(t)
	req := &Message{Type: Confirmable, Code: GET, MID: 7, Token: []byte{1}, Payload: []byte("s")}
	b, _ := req.Marshal()
	if _, err := c.WriteToUDPAddrPort(b, addr); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the handler", func() bool { return inline.Load() == 1 })
	clk.Advance(20 * time.Millisecond)
	ack := readMsg(t, c)
	if ack.Type != Acknowledgement || ack.Code != Empty || ack.MID != 7 {
		t.Fatalf("first: %v %v mid %d, want the empty ACK", ack.Type, ack.Code, ack.MID)
	}
	free()
	sep := readMsg(t, c)
	if sep.Type != Confirmable || sep.Code != Content || string(sep.Payload) != "later:s" || string(sep.Token) != "\x01" {
		t.Fatalf("separate response: %v %v %q", sep.Type, sep.Code, sep.Payload)
	}
}

// A request answered later holds its MaxInflight slot until it is
// answered, and gives it back then.
func TestLaterRequestHoldsItsSlotUntilAnswered(t *testing.T) {
	var inline atomic.Int32
	release := make(chan struct{})
	_, addr := serve(t, EndpointConfig{
		Handler:     laterHandler(&inline, release),
		Inline:      func(*Request) bool { return true },
		MaxInflight: 1,
	})
	client, _ := serve(t, EndpointConfig{})
	first := make(chan *Message, 1)
	go func() {
		resp, _ := client.Do(context.Background(), addr, &Message{Code: GET, Payload: []byte("1")})
		first <- resp
	}()
	testutil.Eventually(t, "the first request's handler", func() bool { return inline.Load() == 1 })
	resp, err := client.Do(context.Background(), addr, &Message{Code: GET, Payload: []byte("2")})
	if err != nil || resp.Code != ServiceUnavailable {
		t.Fatalf("second while the first is open: %v %v, want 5.03", resp, err)
	}
	close(release)
	if resp := <-first; resp == nil || string(resp.Payload) != "later:1" {
		t.Fatalf("first: %v", resp)
	}
	resp, err = client.Do(context.Background(), addr, &Message{Code: GET, Payload: []byte("3")})
	if err != nil || string(resp.Payload) != "later:3" {
		t.Fatalf("third after the first answered: %v %v", resp, err)
	}
}

func TestGoDeliversResponseTimeoutAndClose(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls)})
	clk := fakeClock()
	client, _ := serve(t, EndpointConfig{Clock: clk})
	type result struct {
		m   *Message
		err error
	}
	do := func(e *Endpoint, to netip.AddrPort, timeout time.Duration) result {
		ch := make(chan result, 2)
		e.Go(to, &Message{Code: POST, Payload: []byte("g")}, timeout, func(m *Message, err error) { ch <- result{m, err} })
		if to != addr {
			clk.Advance(timeout) // no answer comes: the deadline
		}
		var r result
		select {
		case r = <-ch:
		case <-time.After(10 * time.Second): // a failure, not a pace: the callback is due at once
			t.Fatalf("Go to %v: no callback after the deadline of %v", to, timeout)
		}
		select {
		case extra := <-ch:
			t.Fatalf("done called twice: %v then %v", r, extra)
		case <-time.After(50 * time.Millisecond):
		}
		return r
	}
	if r := do(client, addr, 5*time.Second); r.err != nil || string(r.m.Payload) != "echo:g" {
		t.Fatalf("got %v", r)
	}
	// A peer that never answers: the deadline ends it.
	silent := rawPeer(t)
	dead := netip.MustParseAddrPort(silent.LocalAddr().String())
	if r := do(client, dead, 100*time.Millisecond); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("silent peer: %v", r.err)
	}
	client.mu.Lock()
	nCalls, nPending := len(client.calls), len(client.pending)
	client.mu.Unlock()
	if nCalls != 0 || nPending != 0 {
		t.Fatalf("after the deadline: %d calls, %d pending CONs left", nCalls, nPending)
	}
	// Close ends what is in flight.
	var wg sync.WaitGroup
	wg.Add(1)
	var got error
	client.Go(dead, &Message{Code: GET}, time.Minute, func(_ *Message, err error) { got = err; wg.Done() })
	client.Close()
	wg.Wait()
	if !errors.Is(got, ErrClosed) {
		t.Fatalf("after Close: %v", got)
	}
}

// One timer serves an exchange of Go: it retransmits the CON (§4.2), stops
// retransmitting after an empty ACK and waits for the separate response
// (§5.2.2) until the deadline, and gives up after MAX_RETRANSMIT.
func TestGoRetransmitsAndKeepsItsDeadline(t *testing.T) {
	p := Params{AckTimeout: 40 * time.Millisecond, MaxRetransmit: 2}
	clk := fakeClock()
	client, _ := serve(t, EndpointConfig{Params: p, Clock: clk})
	// The most a retransmission waits, by the default random factor.
	most := func(i int) time.Duration { return time.Duration(float64(p.AckTimeout<<i) * 1.5) }
	peer := rawPeer(t)
	to := netip.MustParseAddrPort(peer.LocalAddr().String())
	type result struct {
		m   *Message
		err error
	}
	start := func(timeout time.Duration) chan result {
		ch := make(chan result, 2)
		client.Go(to, &Message{Code: GET}, timeout, func(m *Message, err error) { ch <- result{m, err} })
		return ch
	}
	send := func(m *Message) {
		b, _ := m.Marshal()
		if _, err := peer.WriteToUDPAddrPort(b, client.t.(*UDP).LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	pending := func() int {
		client.mu.Lock()
		defer client.mu.Unlock()
		return len(client.pending)
	}

	// Lost once, then an empty ACK, then the separate response.
	ch := start(5 * time.Second)
	first := readMsg(t, peer)
	clk.Advance(most(0))
	again := readMsg(t, peer)
	if again.MID != first.MID || string(again.Token) != string(first.Token) {
		t.Fatalf("retransmission %v of %v", again, first)
	}
	send(&Message{Type: Acknowledgement, MID: first.MID})
	send(&Message{Type: Confirmable, Code: Content, MID: 9, Token: first.Token, Payload: []byte("late")})
	if r := <-ch; r.err != nil || string(r.m.Payload) != "late" {
		t.Fatalf("separate response: %v", r)
	}
	if ack := readMsg(t, peer); ack.Type != Acknowledgement || ack.MID != 9 {
		t.Fatalf("the separate response got %v, not its ACK", ack)
	}

	// An empty ACK and nothing else: no more retransmissions, and the
	// deadline, not MAX_RETRANSMIT, ends it.
	ch = start(400 * time.Millisecond)
	req := readMsg(t, peer)
	send(&Message{Type: Acknowledgement, MID: req.MID})
	testutil.Eventually(t, "the empty ACK to end the retransmissions", func() bool { return pending() == 0 })
	sent := client.Stats().Sent
	clk.Advance(399 * time.Millisecond) // past every retransmission
	select {
	case r := <-ch:
		t.Fatalf("after an empty ACK: %v before the deadline", r.err)
	default:
	}
	clk.Advance(time.Millisecond)
	if r := <-ch; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("after an empty ACK: %v at the deadline", r.err)
	}
	if s := client.Stats(); s.Sent != sent {
		t.Fatalf("%d datagrams sent after the empty ACK", s.Sent-sent)
	}

	// Never acknowledged: the first transmission and two retransmissions,
	// then ErrTimeout well before the deadline.
	ch = start(10 * time.Second)
	for i := 0; i < 3; i++ {
		readMsg(t, peer)
		clk.Advance(most(i))
	}
	if r := <-ch; !errors.Is(r.err, ErrTimeout) {
		t.Fatalf("unacknowledged: %v", r.err)
	}

	// Reset.
	ch = start(5 * time.Second)
	req = readMsg(t, peer)
	send(&Message{Type: Reset, MID: req.MID})
	if r := <-ch; !errors.Is(r.err, ErrReset) {
		t.Fatalf("reset: %v", r.err)
	}
	// The exchange is gone before done is called.
	client.mu.Lock()
	nCalls, nPending := len(client.calls), len(client.pending)
	client.mu.Unlock()
	if nCalls != 0 || nPending != 0 {
		t.Fatalf("%d calls, %d pending CONs left", nCalls, nPending)
	}
	clk.Advance(10 * time.Second)
	select {
	case r := <-ch:
		t.Fatalf("done called twice: %v", r)
	default:
	}
}

// An Observe hub keeps the response writer of every observer, so it holds
// the token itself rather than pointing to a copy of it.
func TestResponseWriterIsSmall(t *testing.T) {
	if n := unsafe.Sizeof(responseWriter{}); n > 96 {
		t.Errorf("responseWriter is %d bytes, want at most 96", n)
	}
	w := &responseWriter{tokLen: 3}
	copy(w.tok[:], "abc")
	if string(w.Token()) != "abc" || cap(w.Token()) != 3 {
		t.Fatalf("token %q with capacity %d", w.Token(), cap(w.Token()))
	}
}

// A forwarded request allocates a goCall (Go), its client's request an
// outCon (the CON of Do) and, at each stage in front of every request, a
// wrapped writer: bytes more put either in a larger size class, which
// BenchmarkForwardGET in bridge shows as B/op. The bounds are the size
// classes they fit (192, 128 and, with a stage's Wrapper of up to 40
// bytes, 80).
func TestPerRequestStructsFitTheirSizeClasses(t *testing.T) {
	if n := unsafe.Sizeof(goCall{}); n > 192 {
		t.Errorf("goCall is %d bytes, want at most 192", n)
	}
	if n := unsafe.Sizeof(outCon{}); n > 128 {
		t.Errorf("outCon is %d bytes, want at most 128", n)
	}
	if n := unsafe.Sizeof(notifyPromptWrapped{}); n > 40 {
		t.Errorf("notifyPromptWrapped is %d bytes, want at most 40", n)
	}
}
