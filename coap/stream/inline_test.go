package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// laterOrigin stands for a proxy's forwarding stage: a request on path
// "fwd" is answered through coap.Later by another goroutine once the test
// releases it; anything else is answered at once.
type laterOrigin struct {
	release  chan struct{} // one answer per value
	inline   chan bool     // coap.Inline of each request, in order
	startRan chan bool     // for each Later start: had the handler returned?
}

func newLaterOrigin() *laterOrigin {
	return &laterOrigin{release: make(chan struct{}, 16), inline: make(chan bool, 16), startRan: make(chan bool, 16)}
}

func (o *laterOrigin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.inline <- coap.Inline(ctx)
	p, _ := r.Msg.Options.Get(coap.URIPath)
	if string(p) != "fwd" {
		return echo.ServeCoAP(ctx, w, r)
	}
	var returned atomic.Bool
	err := coap.Later(ctx, func() {
		o.startRan <- returned.Load()
		go func() {
			<-o.release
			w.WriteResponse(&coap.Message{Code: coap.Content, Payload: []byte("later")})
			coap.Finish(w, nil)
		}()
	})
	returned.Store(true)
	return err
}

// inlineFwd picks the requests on path "fwd", as the proxy picks the
// ones it forwards.
func inlineFwd(r *coap.Request) bool {
	p, _ := r.Msg.Options.Get(coap.URIPath)
	return string(p) == "fwd"
}

// Requests that Config.Inline picks run on the connection's reader under
// the stage contract of the endpoint: coap.Inline is true, Later's start
// runs once the handler has returned, the reader goes on reading while
// the answer is pending (a later request is answered first, in any order
// by token, RFC 8323 §3.3), and the answer from another goroutine ends
// the request, freeing its slot of MaxInflight.
func TestInlineRequestsAreServedOnTheReaderAndAnsweredLater(t *testing.T) {
	o := newLaterOrigin()
	s, addr := serve(t, Config{Handler: o, Inline: inlineFwd, MaxInflight: 2})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)

	p.send(get(1, "fwd"))
	p.send(get(2, "other"))
	if first := p.read(); !bytes.Equal(first.Token, []byte{2}) || string(first.Payload) != "echo other" {
		t.Fatalf("first answer token %x %q, want the one not waiting for its origin", first.Token, first.Payload)
	}
	if in := <-o.inline; !in {
		t.Fatal("coap.Inline is false for a request Config.Inline picked")
	}
	if in := <-o.inline; in {
		t.Fatal("coap.Inline is true for a request served on a goroutine of its own")
	}
	if returned := <-o.startRan; !returned {
		t.Fatal("Later's start ran before the handler returned")
	}
	o.release <- struct{}{}
	if m := p.read(); !bytes.Equal(m.Token, []byte{1}) || string(m.Payload) != "later" {
		t.Fatalf("got token %x %q, want the answer given later", m.Token, m.Payload)
	}
	// Each answer must free its slot: with two slots, requests after the
	// first two are served only if the earlier ones ended.
	for tok := byte(3); tok < 8; tok++ {
		p.send(get(tok, "fwd"))
		<-o.startRan
		o.release <- struct{}{}
		if m := p.read(); !bytes.Equal(m.Token, []byte{tok}) || m.Code != coap.Content {
			t.Fatalf("request %d: got token %x %v", tok, m.Token, m.Code)
		}
	}
	if st := s.Stats(); st.Inline != 6 || st.Requests != 7 {
		t.Fatalf("Inline %d of Requests %d, want 6 of 7", st.Inline, st.Requests)
	}
}

// An inline request answered within Later's start, on the reader, before
// the reader has moved on, is ended all the same.
func TestInlineRequestAnsweredInItsStartIsEnded(t *testing.T) {
	h := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return coap.Later(ctx, func() {
			w.WriteResponse(&coap.Message{Code: coap.Content})
			coap.Finish(w, nil)
		})
	})
	_, addr := serve(t, Config{Handler: h, Inline: func(*coap.Request) bool { return true }, MaxInflight: 1})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	for tok := byte(1); tok < 4; tok++ {
		p.send(get(tok, "x"))
		if m := p.read(); !bytes.Equal(m.Token, []byte{tok}) || m.Code != coap.Content {
			t.Fatalf("request %d: got token %x %v", tok, m.Token, m.Code)
		}
	}
}

// The TCP reader that waits for readability without reading still takes
// frames split anywhere and joined in any way, and tells a clean end from
// one in the middle of a frame: readFrame (rawRead), and serveFrames,
// which serves frames within one read of the socket and waits without
// another read once one has returned less than it had room for. The
// writer holds its end open until every frame came, so that a reader
// that waited with bytes unread would be stuck, not rescued by the end.
func TestTCPReaderTakesFramesSplitAnywhere(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := range 60 {
		m := get(byte(i), string(bytes.Repeat([]byte{'p'}, i*6)))
		if i == 45 || i == 59 {
			// Over a chunk, after more than a chunk of small frames.
			m.Payload = bytes.Repeat([]byte{'b'}, 2*readChunk)
		}
		b, err := AppendFrame(nil, m, false)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
		want = append(want, b)
	}
	if len(stream) < 3*readChunk {
		t.Fatalf("a stream of %d bytes fills no chunk", len(stream))
	}
	readers := map[string]func(tr *streamTransport, each func([]byte, error) bool){
		"readFrame": func(tr *streamTransport, each func([]byte, error) bool) {
			for each(tr.readFrame(1 << 20)) {
			}
		},
		"serveFrames": func(tr *streamTransport, each func([]byte, error) bool) {
			tr.serveFrames(1<<20, frameFunc{fn: each})
		},
		"serveFrames after the read": func(tr *streamTransport, each func([]byte, error) bool) {
			tr.serveFrames(1<<20, frameFunc{fn: each, after: true})
		},
	}
	for _, cut := range []struct {
		name  string
		sizes []int // write sizes, cycled
		tail  []byte
		end   error
		// before: all is in the socket before the reader starts, so
		// that no readiness comes after its first read
		before bool
	}{
		{"byte by byte", []int{1}, nil, io.EOF, false},
		{"odd pieces", []int{3, 7, 1, 250}, nil, io.EOF, false},
		{"all at once", []int{len(stream)}, nil, io.EOF, false},
		{"all there before", []int{len(stream)}, nil, io.EOF, true},
		{"cut in a frame", []int{5}, want[3][:4], io.ErrUnexpectedEOF, false},
	} {
		for name, read := range readers {
			t.Run(cut.name+"/"+name, func(t *testing.T) {
				rd, wr := tcpPair(t)
				tr := newStreamTransport(rd)
				if tr.raw == nil {
					t.Fatal("a TCP connection's reader does not take the raw path")
				}
				data := append(append([]byte(nil), stream...), cut.tail...)
				gotAll, readerDone, writerDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
				if cut.before {
					if _, err := wr.Write(data); err != nil {
						t.Fatal(err)
					}
					data = nil
					waitFor(t, func() bool { return unread(t, rd) == len(stream) })
				}
				go func() {
					defer close(writerDone)
					for i := 0; len(data) > 0; i++ {
						n := min(cut.sizes[i%len(cut.sizes)], len(data))
						if _, err := wr.Write(data[:n]); err != nil {
							return
						}
						data = data[n:]
					}
					select {
					case <-gotAll:
					case <-readerDone:
					case <-time.After(15 * time.Second):
						t.Error("the reader waits with frames unread")
					}
					wr.Close()
				}()
				var got int
				var end error
				read(tr, func(f []byte, err error) bool {
					if err != nil {
						end = err
						return false
					}
					if got == len(want) || !bytes.Equal(f, want[got]) {
						t.Errorf("frame %d: %d bytes, not the one sent", got, len(f))
						return false
					}
					if got++; got == len(want) {
						close(gotAll)
					}
					return true
				})
				close(readerDone)
				<-writerDone
				if got != len(want) {
					t.Fatalf("%d of %d frames, then %v", got, len(want), end)
				}
				if !errors.Is(end, cut.end) {
					t.Fatalf("at the end: %v, want %v", end, cut.end)
				}
				if tr.buf != nil && cut.end == io.EOF {
					t.Fatal("a reader at its end still holds a chunk")
				}
			})
		}
	}
}

// A connection's requests and signals are served within the read of the
// socket only once one of its requests was served inline (Conn.inRead):
// until then after the read, low on the reader's stack, so that the
// reader of a connection that never forwards keeps the smallest stack (an
// idle connection costs 2 KiB less). Inline, which runs on the reader,
// looks at its own stack.
func TestRequestsAreServedWithinTheReadOnceOneWasInline(t *testing.T) {
	within := make(chan bool, 8)
	inline := func(r *coap.Request) bool {
		within <- onStack("stream.(*streamTransport).serveRaw")
		p, _ := r.Msg.Options.Get(coap.URIPath)
		return string(p) == "fwd"
	}
	// The reader does not rest (TestTCPReaderRestsOnAFreshGoroutine)
	// between these requests, however slow the machine.
	_, addr := serve(t, Config{Handler: echo, Inline: inline, rest: time.Hour})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	for i, path := range []string{"a", "fwd", "b", "fwd"} {
		p.send(get(byte(i), path))
		if r := p.readUntil(coap.Content); string(r.Payload) != "echo "+path {
			t.Fatalf("request %d: %q", i, r.Payload)
		}
	}
	for i, want := range []bool{false, false, true, true} {
		if got := <-within; got != want {
			t.Errorf("request %d served within the read: %v, want %v", i, got, want)
		}
	}
}

// A TCP reader that served a request inline, and so grew its stack, rests
// once it has waited for the socket past Config.rest: the goroutine that
// ran the chain ends, freeing its stack, and a fresh one serves the
// connection, inline again and then after the read, as a new reader does.
func TestTCPReaderRestsOnAFreshGoroutine(t *testing.T) {
	ran := make(chan int64, 8)
	within := make(chan bool, 8)
	h := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		ran <- goroutineID()
		within <- onStack("stream.(*streamTransport).serveRaw")
		return echo.ServeCoAP(ctx, w, r)
	})
	_, addr := serve(t, Config{Handler: h, Inline: inlineFwd, rest: time.Millisecond})
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	var readers []int64
	for i, path := range []string{"fwd", "fwd"} {
		p.send(get(byte(i), path))
		if r := p.readUntil(coap.Content); string(r.Payload) != "echo "+path {
			t.Fatalf("request %d: %q", i, r.Payload)
		}
		g := <-ran
		readers = append(readers, g)
		deadline := time.Now().Add(10 * time.Second)
		for alive(g) {
			if time.Now().After(deadline) {
				t.Fatalf("request %d: the reader that served it inline (goroutine %d) still runs", i, g)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if readers[0] == readers[1] {
		t.Fatalf("both requests served by goroutine %d", readers[0])
	}
	// Each request came to a rested reader, which serves the first
	// request after the read, as the first reader did.
	for i := range readers {
		if <-within {
			t.Errorf("request %d served within the read of a fresh reader", i)
		}
	}
	p.send(get(2, "b"))
	if r := p.readUntil(coap.Content); string(r.Payload) != "echo b" {
		t.Fatalf("after resting: %q", r.Payload)
	}
}

// goroutineID is the caller's goroutine's number, from its stack's header.
func goroutineID() int64 {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	f := strings.Fields(string(b))
	id, _ := strconv.ParseInt(f[1], 10, 64)
	return id
}

// alive reports whether goroutine id exists.
func alive(id int64) bool {
	b := make([]byte, 1<<20)
	for n := runtime.Stack(b, true); ; n = runtime.Stack(b, true) {
		if n < len(b) {
			b = b[:n]
			break
		}
		b = make([]byte, 2*len(b))
	}
	return bytes.Contains(b, []byte(fmt.Sprintf("goroutine %d [", id)))
}

// onStack reports whether the caller's stack holds the function named.
func onStack(fn string) bool {
	pc := make([]uintptr, 64)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// frameFunc serves frames with a function, within the read of the socket
// or, with after, once it has returned.
type frameFunc struct {
	fn    func(f []byte, err error) bool
	after bool
}

func (ff frameFunc) serveFrame(f []byte, err error) bool { return ff.fn(f, err) }
func (ff frameFunc) inRead([]byte) bool                  { return !ff.after }

// unread is how many bytes c's socket holds unread (SIOCINQ).
func unread(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// tcpPair is the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	wr, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rd, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close(); wr.Close() })
	wr.(*net.TCPConn).SetNoDelay(true)
	return rd.(*net.TCPConn), wr.(*net.TCPConn)
}

// WebSocket messages are read into pooled chunks held until the next
// read: messages of every size up to Max-Message-Size, larger than a
// chunk too, come through intact both ways, one after the other.
func TestWebSocketMessagesOfEverySizeComeThroughIntact(t *testing.T) {
	mirror := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: r.Msg.Payload})
	})
	const size = 3 * readChunk
	s := NewServer(Config{Handler: mirror, MaxMessageSize: size})
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeWS(l, "/.well-known/coap", nil); err != nil {
		t.Fatal(err)
	}
	cl := NewClient(Config{MaxMessageSize: size})
	defer cl.Close()
	c, err := cl.DialWS(t.Context(), "ws://"+l.Addr().String()+"/.well-known/coap", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, readChunk - 20, readChunk, readChunk + 1, 2*readChunk + 7, 5, size - 64} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + n)
		}
		req := &coap.Message{Code: coap.POST, Payload: p}
		resp, err := c.Do(t.Context(), req)
		if err != nil {
			t.Fatalf("payload of %d bytes: %v", n, err)
		}
		if !bytes.Equal(resp.Payload, p) {
			t.Fatalf("payload of %d bytes: got %d bytes back, not the same", n, len(resp.Payload))
		}
	}
}

// An answer written after its handler returned, as a proxy's upstream
// reader writes the answers of every client, never waits for a peer that
// does not read: the frame waits in the connection's queue instead. The
// request keeps its slot until the frame is written, so that the peer is
// held back at MaxInflight requests, and once it reads it gets every
// answer.
func TestLaterAnswersNeverWaitForAPeerThatDoesNotRead(t *testing.T) {
	pending := make(chan coap.ResponseWriter, 64)
	h := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return coap.Later(ctx, func() { pending <- w })
	})
	s, addr := serve(t, Config{Handler: h, Inline: func(*coap.Request) bool { return true }, MaxInflight: 8})
	var answered atomic.Int64
	done := make(chan struct{})
	defer close(done)
	go func() { // the one upstream reader, answering every request
		payload := bytes.Repeat([]byte{'x'}, 1000)
		for {
			select {
			case w := <-pending:
				w.WriteResponse(&coap.Message{Code: coap.Content, Payload: payload})
				coap.Finish(w, nil)
				answered.Add(1)
			case <-done:
				return
			}
		}
	}()
	p := dialRaw(t, addr)
	p.send(csm(0))
	p.readUntil(CSM)
	const n = 12000 // 12 MB of answers: more than loopback buffers hold
	go func() {
		for i := range n {
			m := &coap.Message{Code: coap.GET, Token: []byte{byte(i >> 8), byte(i)}}
			b, _ := AppendFrame(nil, m, false)
			if _, err := p.c.Write(b); err != nil {
				return
			}
		}
	}()
	inflight := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.inflight
		}
		return 0
	}
	testutil.Eventually(t, "every request handed over answered, and every slot held by an answer not yet written", func() bool {
		st := s.Stats()
		return inflight() == 8 && answered.Load() == int64(st.Requests)
	})
	if st := s.Stats(); st.Requests >= n {
		t.Fatalf("all %d requests read while the peer did not read: no slot waited for its answer's write", st.Requests)
	}
	seen := map[int]bool{}
	for len(seen) < n {
		m := p.read()
		if m.Code != coap.Content || len(m.Token) != 2 {
			t.Fatalf("got %v token %x", m.Code, m.Token)
		}
		seen[int(m.Token[0])<<8|int(m.Token[1])] = true
	}
}
