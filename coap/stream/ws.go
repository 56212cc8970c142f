package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// wsTransport is WebSockets: one CoAP message per binary message (§4.2).
type wsTransport struct {
	c *websocket.Conn
	// raw is the connection under c, when known: closing it cuts short
	// a closing handshake the peer does not answer.
	raw net.Conn
	// ctx is what reads and writes wait under; ending it (end) makes
	// the library close the socket under a read or write in progress.
	ctx     context.Context
	end     context.CancelFunc
	once    sync.Once
	closing atomic.Bool
	closed  chan struct{} // closed once the closing handshake is over
	buf     *[]byte       // the chunk of the last message read; nil while waiting
}

func newWSTransport(c *websocket.Conn, raw net.Conn) *wsTransport {
	if tc, ok := raw.(*tls.Conn); ok {
		// Its Close would first try to write close_notify.
		raw = tc.NetConn()
	}
	t := &wsTransport{c: c, raw: raw, closed: make(chan struct{})}
	// Not the server's or client's context: their Close must not cut the
	// closing handshake that close starts.
	t.ctx, t.end = context.WithCancel(context.Background())
	return t
}

// wsCloseGrace bounds the closing handshake: a peer that has not
// answered our Close frame by then has the socket closed.
const wsCloseGrace = time.Second

func (t *wsTransport) ws() bool { return true }

// close starts the WebSocket closing handshake (RFC 6455 §7.1.2, as RFC
// 8323 Figure 17 shows it): the peer gets a Close frame with 1000, not a
// socket that just ends (1006, which browsers report as not clean). It
// does not wait: the reader takes the peer's Close, and wait tells
// when it is over.
func (t *wsTransport) close() error {
	t.once.Do(func() {
		t.closing.Store(true)
		go func() {
			defer close(t.closed)
			stop := time.AfterFunc(wsCloseGrace, func() {
				t.end()
				if t.raw != nil {
					t.raw.Close()
				}
			})
			defer stop.Stop()
			t.c.Close(websocket.StatusNormalClosure, "")
			t.end()
		}()
	})
	return nil
}

// wait returns once the closing handshake is over; close must have been
// called.
func (t *wsTransport) wait() { <-t.closed }

func (t *wsTransport) readFrame(limit int) ([]byte, error) {
	if t.buf != nil {
		chunks.Put(t.buf)
		t.buf = nil
	}
	// The library bounds the message (SetReadLimit) and closes the
	// connection with 1009 past it: a WebSocket message cannot be
	// skipped without reading it.
	for {
		typ, r, err := t.c.Reader(t.ctx)
		if err != nil {
			return nil, err
		}
		b, err := t.readMessage(r)
		if err != nil {
			return nil, err
		}
		if t.closing.Load() {
			// Closed on our side: what comes before the peer's Close
			// is dropped (RFC 6455 §1.4), the read kept under way so
			// that wsCloseGrace can end it.
			continue
		}
		if typ != websocket.MessageBinary {
			// §4.2: binary frames only.
			return nil, errWSText
		}
		return b, nil
	}
}

// readMessage reads a message into a pooled chunk, which readFrame holds
// only until its next call: a connection waiting for a message holds
// none, and a message needs no buffer of its own unless it is larger.
func (t *wsTransport) readMessage(r io.Reader) ([]byte, error) {
	if t.buf == nil {
		t.buf = chunks.Get().(*[]byte)
	}
	b := (*t.buf)[:0]
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // over a chunk: a larger array of its own
		}
	}
}

var errWSText = errors.New("stream: WebSocket text message")

func (t *wsTransport) write(frames []out) error {
	for _, f := range frames {
		if f.b == nil {
			continue
		}
		if err := t.c.Write(t.ctx, websocket.MessageBinary, f.b); err != nil {
			return err
		}
	}
	return nil
}
