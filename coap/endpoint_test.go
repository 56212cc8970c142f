package coap

import (
	"bytes"
	"context"
	"errors"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"net"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
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

// fakeClock is the clock of an endpoint whose timers a test moves by hand
// (EndpointConfig.Clock): no test of the message layer waits for them.
func fakeClock() *clocktest.Fake { return clocktest.New(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)) }

// blocking is a handler that signals when it starts and answers
// "echo:" and the payload once released.
func blocking(entered chan<- struct{}, release <-chan struct{}) Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		entered <- struct{}{}
		<-release
		return w.WriteResponse(&Message{Code: Content, Payload: append([]byte("echo:"), r.Msg.Payload...)})
	})
}

func echo(calls *atomic.Int32) Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		calls.Add(1)
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
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls)})
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
	clk := fakeClock()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	_, addr := serve(t, EndpointConfig{Handler: blocking(entered, release), AckDelay: 20 * time.Millisecond, Clock: clk})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free) // before the endpoint's Close, which waits for the handler
	c := rawPeer(t)
	req := &Message{Type: Confirmable, Code: GET, MID: 7, Token: []byte{1, 2}}
	b, _ := req.Marshal()
	if _, err := c.WriteToUDPAddrPort(b, addr); err != nil {
		t.Fatal(err)
	}
	<-entered
	clk.Advance(20 * time.Millisecond)
	ack := readMsg(t, c)
	if ack.Type != Acknowledgement || ack.Code != Empty || ack.MID != 7 {
		t.Fatalf("want empty ACK for mid 7, got %v", ack)
	}
	free()
	sep := readMsg(t, c)
	if sep.Type != Confirmable || sep.Code != Content || !bytes.Equal(sep.Token, []byte{1, 2}) {
		t.Fatalf("want CON 2.05 with the request's token, got %v", sep)
	}
}

func TestDuplicateCONIsAnsweredFromMemoryNotReprocessed(t *testing.T) {
	var calls atomic.Int32
	_, addr := serve(t, EndpointConfig{Handler: echo(&calls)})
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
	_, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32))})
	c := rawPeer(t)
	rst := exchange(t, c, addr, []byte{0x40, 0x00, 0x12, 0x34})
	if rst.Type != Reset || rst.MID != 0x1234 || rst.Code != Empty {
		t.Fatalf("CoAP ping: want RST mid 0x1234, got %v", rst)
	}
}

func TestMalformedCONIsResetAndCounted(t *testing.T) {
	e, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32))})
	c := rawPeer(t)
	// CON GET with an option length nibble of 15: a format error.
	rst := exchange(t, c, addr, []byte{0x40, 0x01, 0x00, 0x05, 0x1f})
	if rst.Type != Reset || rst.MID != 5 {
		t.Fatalf("want RST for mid 5, got %v", rst)
	}
	// A malformed NON is dropped silently.
	c.WriteToUDPAddrPort([]byte{0x50, 0x01, 0x00, 0x06, 0x1f}, addr)
	c.WriteToUDPAddrPort([]byte{0xff}, addr)
	testutil.Eventually(t, "the malformed datagrams", func() bool { return e.Stats().Malformed >= 3 })
	if got := e.Stats().Malformed; got != 3 {
		t.Fatalf("malformed = %d, want 3", got)
	}
}

func TestCONIsRetransmittedThenTimesOut(t *testing.T) {
	silent := rawPeer(t)
	to := silent.LocalAddr().(*net.UDPAddr).AddrPort()
	p := Params{AckTimeout: 10 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 3}
	clk := fakeClock()
	client, _ := serve(t, EndpointConfig{Params: p, Clock: clk})
	done := make(chan error, 1)
	go func() {
		_, err := client.Do(context.Background(), to, &Message{Code: GET})
		done <- err
	}()
	// 1 transmission + MAX_RETRANSMIT retransmissions reach the peer, the
	// timeout doubling each time (§4.2): each is due only once the one
	// before has waited its time.
	var mid uint16
	wait := p.AckTimeout
	for i := 0; i <= p.MaxRetransmit; i++ {
		m := readMsg(t, silent)
		if i > 0 && m.MID != mid {
			t.Fatal("a retransmission must keep the message ID")
		}
		mid = m.MID
		if i < p.MaxRetransmit {
			clk.Advance(wait - time.Millisecond) // the least the random factor allows
			if got := client.Stats().Retransmissions; got != uint64(i) {
				t.Fatalf("retransmission %d sent before its timeout", got)
			}
		}
		clk.Advance(time.Duration(float64(wait) * p.AckRandomFactor)) // past the most it allows
		wait *= 2
	}
	if err := <-done; err != ErrTimeout {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if s := client.Stats(); s.Retransmissions != 3 || s.Timeouts != 1 || s.Sent != 4 {
		t.Fatalf("stats %+v; want 4 sent, 3 retransmissions, 1 timeout", s)
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
	const n = 64
	entered, release := make(chan struct{}, n), make(chan struct{})
	_, addr := serve(t, EndpointConfig{Handler: blocking(entered, release)})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	client, _ := serve(t, EndpointConfig{})
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := client.Do(context.Background(), addr, &Message{Code: GET})
			errs <- err
		}()
	}
	// Every handler is running before any is released: the exchanges are
	// in flight at once, not one after the other.
	for i := 0; i < n; i++ {
		select {
		case <-entered:
		case err := <-errs:
			t.Fatalf("an exchange ended before all %d were in flight: %v", n, err)
		}
	}
	free()
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestDedupMemoryIsBounded(t *testing.T) {
	e, addr := serve(t, EndpointConfig{Handler: echo(new(atomic.Int32)), DedupLimit: 100})
	c := rawPeer(t)
	for mid := 0; mid < 1000; mid++ {
		code := GET // answered and forgotten (idempotent)...
		if mid%2 == 1 {
			code = POST // ...or remembered
		}
		b, _ := (&Message{Type: NonConfirmable, Code: code, MID: uint16(mid)}).Marshal()
		c.WriteToUDPAddrPort(b, addr)
	}
	testutil.Eventually(t, "every datagram", func() bool { return e.Stats().Received >= 1000 })
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
	clk := fakeClock()
	e := NewEndpoint(f, EndpointConfig{Clock: clk})
	defer e.Close()
	// Pauses of 1, 2, 4, ... 64 ms, then 100 ms: the reader reads again
	// only once each has passed; one that does not pause makes hundreds
	// of thousands of reads meanwhile.
	testutil.Eventually(t, "the first read", func() bool { return f.reads.Load() == 1 })
	for i, pause := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 100, 100} {
		pause *= time.Millisecond
		testutil.Eventually(t, "the reader to pause", func() bool { return slices.Contains(clk.Pending(), pause) })
		if pause > time.Millisecond {
			clk.Advance(pause - time.Millisecond)
			if n := f.reads.Load(); n != int64(i+1) {
				t.Fatalf("%d reads before pause %d of %v was over", n, i+1, pause)
			}
			clk.Advance(time.Millisecond)
		} else {
			clk.Advance(pause)
		}
		testutil.Eventually(t, "the read after the pause", func() bool { return f.reads.Load() == int64(i+2) })
	}
	// Close still ends a reader in its pause.
	e.Close()
}

// The CONs an endpoint retransmits share one clock timer, armed for the
// earliest due: a timer each cost every request the runtime's timer
// allocation (BenchmarkForwardGET in bridge). Each CON is still
// retransmitted at its own time, and one whose exchange ends, whichever
// its place among the others, is not.
func TestCONsShareOneClockTimer(t *testing.T) {
	const n = 12
	silent := rawPeer(t)
	to := silent.LocalAddr().(*net.UDPAddr).AddrPort()
	p := Params{AckTimeout: 10 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2}
	clk := fakeClock()
	client, _ := serve(t, EndpointConfig{Params: p, Clock: clk})
	before := len(clk.Pending()) // the endpoint's own tick
	var cancels [n]context.CancelFunc
	errs := make(chan error, n)
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		go func() {
			_, err := client.Do(ctx, to, &Message{Code: GET})
			errs <- err
		}()
	}
	mids := map[uint16]bool{}
	for range n {
		mids[readMsg(t, silent).MID] = true
	}
	if got := len(clk.Pending()) - before; got != 1 {
		t.Fatalf("%d CONs in flight armed %d clock timers, want 1", n, got)
	}
	// End every other exchange: they leave the timers' heap from
	// wherever they are in it.
	client.mu.Lock()
	var ended []uint16
	for _, q := range client.pending {
		if len(ended) < n/2 {
			ended = append(ended, q.key.mid)
		}
	}
	client.mu.Unlock()
	for _, mid := range ended {
		client.cancelCON(exKey{to, mid})
		delete(mids, mid)
	}
	client.mu.Lock()
	left := len(client.timers)
	client.mu.Unlock()
	if left != n/2 {
		t.Fatalf("%d timers left of %d CONs pending", left, n/2)
	}
	clk.Advance(p.AckTimeout - time.Millisecond) // before any is due
	if got := client.Stats().Retransmissions; got != 0 {
		t.Fatalf("%d retransmissions before the first timeout", got)
	}
	clk.Advance(p.AckTimeout) // past the most the random factor allows
	for range n / 2 {
		m := readMsg(t, silent)
		if !mids[m.MID] {
			t.Fatalf("retransmitted MID %d: ended, or sent twice", m.MID)
		}
		delete(mids, m.MID)
	}
	if got := client.Stats().Retransmissions; got != n/2 {
		t.Fatalf("%d retransmissions, want %d", got, n/2)
	}
	// The second retransmission waits twice as long; then they time out.
	clk.Advance(4 * p.AckTimeout)
	for range n / 2 {
		readMsg(t, silent)
	}
	clk.Advance(8 * p.AckTimeout)
	for range n / 2 {
		if err := <-errs; err != ErrTimeout {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
	}
	if s := client.Stats(); s.Retransmissions != n || s.Timeouts != n/2 {
		t.Fatalf("stats %+v; want %d retransmissions, %d timeouts", s, n, n/2)
	}
	for _, c := range cancels {
		c()
	}
}
