package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// rawPeer is a CoAP-over-TCP peer written against the wire: it sends
// what a test tells it, malformed or out of order, and reads frames.
type rawPeer struct {
	t  *testing.T
	c  net.Conn
	rd *streamTransport
}

func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, c: c, rd: newStreamTransport(c)}
}

func (p *rawPeer) send(m *coap.Message) {
	p.t.Helper()
	b, err := AppendFrame(nil, m, false)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendRaw(b)
}

func (p *rawPeer) sendRaw(b []byte) {
	p.t.Helper()
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// read returns the next message, failing after a generous deadline.
func (p *rawPeer) read() *coap.Message {
	p.t.Helper()
	m, err := p.tryRead()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return m
}

func (p *rawPeer) tryRead() (*coap.Message, error) {
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.rd.readFrame(1 << 20)
	if err != nil {
		return nil, err
	}
	var m coap.Message
	if err := Decode(&m, f, false); err != nil {
		return nil, err
	}
	return m.Clone(), nil
}

// readUntil skips messages until one with code.
func (p *rawPeer) readUntil(code coap.Code) *coap.Message {
	p.t.Helper()
	for {
		if m := p.read(); m.Code == code {
			return m
		}
	}
}

// closed waits for the server to close the connection.
func (p *rawPeer) closed() {
	p.t.Helper()
	for {
		if _, err := p.tryRead(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return
			}
			p.t.Fatalf("want the connection closed, got %v", err)
		}
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func csm(size uint32) *coap.Message {
	m := &coap.Message{Code: CSM}
	if size > 0 {
		m.Options = m.Options.SetUint(MaxMessageSize, size)
	}
	return m
}

func get(tok byte, path string) *coap.Message {
	m := &coap.Message{Code: coap.GET, Token: []byte{tok}}
	m.Options = m.Options.Insert(coap.URIPath, []byte(path))
	return m
}

// serve starts a server on loopback with h.
func serve(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s := NewServer(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, l.Addr().String()
}

// echo answers 2.05 with the request's first Uri-Path.
var echo = coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	p, _ := r.Msg.Options.Get(coap.URIPath)
	return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: append([]byte("echo "), p...)})
})

func TestServerSendsCSMFirst(t *testing.T) {
	_, addr := serve(t, Config{Handler: echo, MaxMessageSize: 4096})
	p := dialRaw(t, addr)
	m := p.read()
	if m.Code != CSM {
		t.Fatalf("first message %v, want CSM (RFC 8323 §3.3)", m.Code)
	}
	if v, ok := m.Options.Uint(MaxMessageSize); !ok || v != 4096 {
		t.Fatalf("Max-Message-Size %d (%v), want 4096", v, ok)
	}
	if !m.Options.Has(BlockWiseTransfer) {
		t.Fatal("CSM without Block-Wise-Transfer")
	}
	p.send(csm(0))
	p.send(get(7, "x"))
	r := p.read()
	if r.Code != coap.Content || !bytes.Equal(r.Token, []byte{7}) || string(r.Payload) != "echo x" {
		t.Fatalf("response %v %q", r, r.Payload)
	}
}

func TestRequestBeforeCSMIsAborted(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo})
	p := dialRaw(t, addr)
	p.send(get(1, "x"))
	a := p.readUntil(Abort)
	if len(a.Payload) == 0 {
		t.Fatal("Abort without a diagnostic")
	}
	p.closed()
	if s.Stats().Requests != 0 {
		t.Fatal("the request was served")
	}
}

func TestMalformedFrameIsAborted(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.sendRaw([]byte{0x10, 0x01, 0xff}) // a payload marker with no payload
	p.readUntil(Abort)
	p.closed()
	if s.Stats().Malformed != 1 || s.Stats().AbortsSent != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestUnknownCriticalCSMOptionIsAborted(t *testing.T) {
	_, addr := serve(t, Config{Handler: echo})
	p := dialRaw(t, addr)
	m := csm(0)
	m.Options = m.Options.Insert(9, []byte{1}) // critical, unassigned
	p.send(m)
	a := p.readUntil(Abort)
	if v, ok := a.Options.Uint(BadCSMOption); !ok || v != 9 {
		t.Fatalf("Bad-CSM-Option %d (%v), want 9 (§5.6)", v, ok)
	}
	p.closed()
}

func TestElectiveUnknownSignalOptionsAreIgnored(t *testing.T) {
	_, addr := serve(t, Config{Handler: echo})
	p := dialRaw(t, addr)
	m := csm(0)
	m.Options = m.Options.Insert(10, []byte{1}) // elective, unassigned
	p.send(m)
	ping := &coap.Message{Code: Ping, Token: []byte{0x42}}
	ping.Options = ping.Options.Insert(8, nil)
	p.send(ping)
	pong := p.readUntil(Pong)
	if !bytes.Equal(pong.Token, []byte{0x42}) {
		t.Fatalf("Pong token %x, want 42 (§5.4)", pong.Token)
	}
}

// gate is a handler that holds each request until released.
type gate struct {
	in      chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{in: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gate) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	g.in <- struct{}{}
	<-g.release
	return echo.ServeCoAP(ctx, w, r)
}

// §5.4.1: a Ping with Custody gets its Pong once the requests before it
// are answered, with Custody; one without is answered at once.
func TestPongWithCustodyWaitsForEarlierRequests(t *testing.T) {
	g := newGate()
	_, addr := serve(t, Config{Handler: g})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	p.send(get(1, "a"))
	<-g.in
	ping := &coap.Message{Code: Ping, Token: []byte{0xc1}}
	ping.Options = ping.Options.Insert(Custody, nil)
	p.send(ping)
	p.send(&coap.Message{Code: Ping, Token: []byte{0xc2}})
	first := p.read()
	if first.Code != Pong || !bytes.Equal(first.Token, []byte{0xc2}) {
		t.Fatalf("first %v token %x, want the Pong of the Ping without Custody", first.Code, first.Token)
	}
	close(g.release)
	resp := p.read()
	if resp.Code != coap.Content {
		t.Fatalf("got %v before the response", resp.Code)
	}
	pong := p.read()
	if pong.Code != Pong || !bytes.Equal(pong.Token, []byte{0xc1}) || !pong.Options.Has(Custody) {
		t.Fatalf("got %v token %x custody=%v, want the Pong with Custody", pong.Code, pong.Token, pong.Options.Has(Custody))
	}
}

// §5.5: after Release the server answers what it received and closes.
func TestReleaseClosesAfterAnswering(t *testing.T) {
	g := newGate()
	s, addr := serve(t, Config{Handler: g})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	p.send(get(1, "a"))
	<-g.in
	p.send(&coap.Message{Code: Release, Payload: []byte("bye")})
	waitFor(t, func() bool { return s.Stats().Releases == 1 })
	close(g.release)
	if r := p.read(); r.Code != coap.Content {
		t.Fatalf("got %v, want the response before the close", r.Code)
	}
	p.closed()
	waitFor(t, func() bool { return s.Stats().Conns == 0 })
}

func TestAbortFromPeerClosesAtOnce(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	p.send(&coap.Message{Code: Abort, Payload: []byte("going")})
	p.closed()
	waitFor(t, func() bool { return s.Stats().Conns == 0 && s.Stats().AbortsReceived == 1 })
}

// §5.3.1: never more than the peer's Max-Message-Size.
func TestResponsesRespectThePeersMaxMessageSize(t *testing.T) {
	big := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: bytes.Repeat([]byte("x"), 200)})
	})
	s, addr := serve(t, Config{Handler: big})
	p := dialRaw(t, addr)
	p.send(csm(100))
	p.readUntil(CSM)
	p.send(get(3, "a"))
	r := p.read()
	if r.Code != coap.InternalServerError || Size(r, false) > 100 {
		t.Fatalf("got %v of %d bytes, want a 5.00 within 100 bytes", r.Code, Size(r, false))
	}
	if s.Stats().TooBig != 1 {
		t.Fatalf("TooBig %d", s.Stats().TooBig)
	}
}

// A request over our Max-Message-Size is skipped and answered 4.13 with
// Size1; the connection goes on.
func TestOversizeRequestGets413AndTheStreamGoesOn(t *testing.T) {
	_, addr := serve(t, Config{Handler: echo, MaxMessageSize: 1152})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	put := &coap.Message{Code: coap.PUT, Token: []byte{5}, Payload: bytes.Repeat([]byte("y"), 3000)}
	p.send(put)
	p.send(get(6, "after"))
	r := p.read()
	if r.Code != coap.RequestEntityTooLarge || !bytes.Equal(r.Token, []byte{5}) {
		t.Fatalf("got %v token %x, want 4.13 for token 05", r.Code, r.Token)
	}
	if v, _ := r.Options.Uint(coap.Size1); v != 1152 {
		t.Fatalf("Size1 %d, want 1152", v)
	}
	if r := p.read(); r.Code != coap.Content || string(r.Payload) != "echo after" {
		t.Fatalf("the next request got %v %q", r.Code, r.Payload)
	}
}

// A connection is closed if its CSM does not come within
// HandshakeTimeout: a missing CSM is an error (§3.3).
func TestMissingCSMIsAborted(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo, HandshakeTimeout: 50 * time.Millisecond})
	p := dialRaw(t, addr)
	p.readUntil(Abort)
	p.closed()
	if s.Stats().HandshakeFailed != 1 {
		t.Fatalf("HandshakeFailed %d", s.Stats().HandshakeFailed)
	}
}

// A quiet peer gets Pings; while it answers it stays, however long; one
// that stops answering is closed (§5.4).
func TestKeepalivePingsAndClosesOnlyTheUnresponsive(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo, Keepalive: 20 * time.Millisecond})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	for range 3 {
		ping := p.readUntil(Ping)
		p.send(&coap.Message{Code: Pong, Token: ping.Token})
	}
	if s.Stats().KeepaliveClosed != 0 {
		t.Fatal("a peer that answered was closed")
	}
	// Now silent.
	p.closed()
	waitFor(t, func() bool { return s.Stats().KeepaliveClosed == 1 })
}

// Keepalive measures quiet from the last frame of any kind: a peer whose
// requests come more often than Keepalive gets no Ping (§5.4). The
// connection's last frame is dated an hour back and its keepalive run by
// hand after a request, so no clock decides the outcome.
func TestKeepaliveCountsAnyFrameAsNotQuiet(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo, Keepalive: time.Hour})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	s.mu.Lock()
	var c *Conn
	for c = range s.conns {
	}
	s.mu.Unlock()
	old := time.Now().Add(-2 * time.Hour).UnixNano()
	c.lastRead.Store(old)
	p.send(get(1, "x"))
	p.readUntil(coap.Content)
	if c.lastRead.Load() == old {
		t.Fatal("the request left the time of the last frame as it was")
	}
	c.keepalive()
	if n := s.Stats().KeepalivePings; n != 0 {
		t.Fatalf("%d Pings to a peer that just sent a request", n)
	}
	// Quiet for longer than Keepalive, it does get one.
	c.lastRead.Store(old)
	c.keepalive()
	p.readUntil(Ping)
	if n := s.Stats().KeepalivePings; n != 1 {
		t.Fatalf("%d Pings to a quiet peer, want 1", n)
	}
}

func TestConnectionsBeyondMaxConnsAreClosed(t *testing.T) {
	s, addr := serve(t, Config{Handler: echo, MaxConns: 1})
	p1 := dialRaw(t, addr)
	p1.send(csm(0))
	p1.readUntil(CSM)
	p2 := dialRaw(t, addr)
	p2.closed()
	if s.Stats().OverLimit != 1 {
		t.Fatalf("OverLimit %d", s.Stats().OverLimit)
	}
	p1.send(get(1, "still"))
	if r := p1.readUntil(coap.Content); string(r.Payload) != "echo still" {
		t.Fatalf("%q", r.Payload)
	}
}

// A peer that sends requests and never reads has its connection closed
// once MaxBuffered bytes wait: the server does not buffer without bound.
func TestAPeerThatDoesNotReadIsClosedAtMaxBuffered(t *testing.T) {
	big := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: bytes.Repeat([]byte("z"), 60000)})
	})
	s, addr := serve(t, Config{Handler: big, MaxBuffered: 256 << 10})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	b, _ := AppendFrame(nil, csm(1<<20), false)
	c.Write(b)
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; s.Stats().Overflow == 0 && i < 1_000_000; i++ {
			f, _ := AppendFrame(nil, get(byte(i), "x"), false)
			if _, err := c.Write(f); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	waitFor(t, func() bool { return s.Stats().Overflow == 1 })
	c.Close()
	<-done
	waitFor(t, func() bool { return s.Stats().Conns == 0 })
}

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.EventuallyWithin(t, 15*time.Second, "the condition", cond)
}
