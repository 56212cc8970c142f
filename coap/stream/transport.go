package stream

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// transport moves whole frames over one connection: a byte stream (TCP,
// TLS) with the framing of RFC 8323 §3.2, or WebSocket messages (§4.2).
// One goroutine reads, one writes at a time.
type transport interface {
	// readFrame returns the next frame, valid until the next call. A
	// frame over limit is skipped and reported as an *oversize.
	readFrame(limit int) ([]byte, error)
	// write sends frames in order.
	write(frames []out) error
	close() error
	ws() bool
}

// out is one frame to send and whom to tell once it is written.
type out struct {
	b    []byte
	done func(error)
	w    *writer // the request answered, told once written
	pool *[]byte // where b came from (framePool), nil if not pooled
}

// oversize reports a frame over the size limit: its code and token, for
// the 4.13 a request gets (RFC 7959 §2.9.3, RFC 7252 §5.9.2.9).
type oversize struct {
	code  coap.Code
	token []byte
	size  int
	fatal bool // not skipped: the stream cannot go on
}

// maxSkip bounds what a reader skips of a frame over the limit; a larger
// one ends the connection instead of being read to its end.
const maxSkip = 1 << 20

func (e *oversize) Error() string { return ErrTooLarge.Error() }
func (e *oversize) Unwrap() error { return ErrTooLarge }

// readChunk is the size of the buffer a byte stream is read into while
// frames arrive. An idle connection holds none: it waits for readability
// (plain TCP) or in a read of a few bytes (idleRead), so that thousands
// of idle clients cost little.
const (
	readChunk = 4096
	idleRead  = 16
)

var chunks = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// streamTransport is TCP or TLS: frames of §3.2 on a byte stream.
type streamTransport struct {
	c    net.Conn
	idle [idleRead]byte
	buf  *[]byte // pooled while bytes are buffered; nil when idle
	big  []byte  // a frame larger than a chunk
	r, w int     // unread bytes are (*buf)[r:w]

	// A plain TCP connection waits idle for readability without reading
	// (serveFrames; rawRead for readFrame), and then reads what came into
	// a chunk at once: one read for a frame that came whole, where the
	// idle array takes two.
	raw    syscall.RawConn
	rawFn  func(fd uintptr) bool // rawRead, bound once
	rawN   int
	rawErr error

	// tryWrite's, used by the connection's one writer at a time.
	tryFn  func(fd uintptr) bool // rawWrite, bound once
	tryB   []byte
	tryN   int
	tryErr error

	// serveFrames' and nextFrame's, the reader's: more is whether the
	// socket may hold more bytes than the last read returned (it filled
	// what it was given); pending a frame to serve after the read.
	srv              frameServer
	serveFn          func(fd uintptr) bool // serveRaw, bound once
	limit            int
	more, stop, slow bool
	pending          []byte
	resting          bool // a read deadline is set for the reader to rest (restIn)

	// serveFrames serves the reader's frames within a read of the
	// descriptor, and Close would wait for that read to end: a close
	// meanwhile, from the reader itself too, shuts the socket down and
	// leaves the Close to serveFrames.
	closeMu  sync.Mutex
	serving  bool // guarded by closeMu: in serveFrames' read
	closeDue bool // guarded by closeMu: close was called while serving
}

func newStreamTransport(c net.Conn) *streamTransport {
	t := &streamTransport{c: c}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			t.raw, t.rawFn, t.tryFn = raw, t.rawRead, t.rawWrite
		}
	}
	return t
}

func (t *streamTransport) ws() bool { return false }

func (t *streamTransport) close() error {
	t.closeMu.Lock()
	if t.serving {
		t.closeDue = true
		t.closeMu.Unlock()
		// Wakes the reader if it waits, and fails what is written next.
		t.raw.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		return nil
	}
	t.closeMu.Unlock()
	return t.c.Close()
}

// frameServer is what serveFrames hands frames to: the connection.
type frameServer interface {
	// serveFrame serves a frame read, or the error that ends reading;
	// false when the connection is over.
	serveFrame(f []byte, err error) bool
	// inRead reports whether a frame may be served within the read of
	// the descriptor, on top of its calls; if not, it is served once
	// the read has returned, and the next read reads before it waits.
	inRead(f []byte) bool
}

// restIn has serveFrames return, to rest, at its first wait for
// readability after d: the reader calls it within the read, once a
// request has grown its stack. A read deadline does it, so that neither
// a frame nor a wait reads the clock.
func (t *streamTransport) restIn(d time.Duration) {
	if t.c.SetReadDeadline(time.Now().Add(d)) == nil {
		t.resting = true
	}
}

// serveFrames hands srv each frame read, and then the error that ends
// reading, until srv returns false, or returns true when the reader is to
// rest (restIn): the socket was empty and waited for, and a fresh
// goroutine is to call serveFrames again. The frames are served within one
// read of the descriptor (RawConn.Read, serveRaw), which then waits for
// readability without another read when the last one found no more bytes
// than it returned: within one read the poller's readiness is not reset,
// so a wait after a read that emptied the socket misses nothing, as bytes
// that came since made it readable again. A new read resets it, and must
// read before it waits. A frame that does not fit a chunk, or is over
// limit, takes readFrame; one that srv does not take within the read
// (inRead) is served after it.
func (t *streamTransport) serveFrames(limit int, srv frameServer) bool {
	t.srv, t.limit = srv, limit
	if t.serveFn == nil {
		t.serveFn = t.serveRaw
	}
	for {
		t.stop, t.slow = false, false
		t.closeMu.Lock()
		if t.closeDue {
			t.closeMu.Unlock()
			srv.serveFrame(nil, net.ErrClosed)
			return false
		}
		t.serving = true
		t.closeMu.Unlock()
		err := t.raw.Read(t.serveFn)
		t.closeMu.Lock()
		t.serving = false
		due := t.closeDue
		t.closeMu.Unlock()
		if due {
			t.c.Close()
		}
		rest := false
		if t.resting {
			// Whatever ended the read, the deadline must not end the
			// next one, nor readFrame's.
			t.resting = false
			t.c.SetReadDeadline(time.Time{})
			rest = errors.Is(err, os.ErrDeadlineExceeded)
		}
		switch {
		case t.stop:
			return false
		case rest && !due:
			return true
		case err != nil:
			srv.serveFrame(nil, err)
			return false
		case due:
			srv.serveFrame(nil, net.ErrClosed)
			return false
		case t.pending != nil:
			f := t.pending
			t.pending = nil
			if !srv.serveFrame(f, nil) {
				return false
			}
		case t.slow:
			if !srv.serveFrame(t.readFrame(limit)) {
				return false
			}
		}
	}
}

// serveRaw is serveFrames' call within the read of fd: it reads, serves
// what came, and returns false to wait for readability, true when done.
func (t *streamTransport) serveRaw(fd uintptr) bool {
	t.more = true // the first call, or after a wait: read first
	for {
		f, err := t.nextFrame(int(fd), t.limit)
		switch err {
		case errWait:
			return false
		case errSlow:
			t.slow = true
			return true
		}
		if err == nil && !t.srv.inRead(f) {
			t.pending = f
			return true
		}
		if !t.srv.serveFrame(f, err) {
			t.stop = true
			return true
		}
	}
}

// errWait and errSlow are nextFrame's: wait for readability; the next
// frame needs readFrame.
var (
	errWait = errors.New("stream: wait for readability")
	errSlow = errors.New("stream: frame for readFrame")
)

// nextFrame is readFrame within serveRaw, on the descriptor fd, for
// frames that fit a chunk and limit; errSlow for the next frame if it
// does not, which readFrame then reads. It reads fd only when the
// buffered bytes hold no whole frame and the socket may hold more (more),
// and errWait once a read found nothing or returned less than it was
// given. Waiting, it holds no chunk unless part of a frame came.
func (t *streamTransport) nextFrame(fd, limit int) ([]byte, error) {
	t.big = nil
	for {
		if t.buf != nil && t.r < t.w {
			b := (*t.buf)[t.r:t.w]
			_, size, err := FrameSize(b)
			switch {
			case errors.Is(err, ErrShort):
			case err != nil, size > limit, size > readChunk:
				return nil, errSlow
			case size <= len(b):
				t.r += size
				return b[:size:size], nil
			}
		}
		if !t.more {
			if t.buf != nil && t.r == t.w {
				chunks.Put(t.buf)
				t.buf = nil
			}
			return nil, errWait
		}
		if err := t.readInto(fd); err != nil && err != errWait {
			if t.r == t.w {
				chunks.Put(t.buf)
				t.buf = nil
			}
			return nil, err
		}
	}
}

// readInto is one read of fd into the chunk, after the bytes buffered;
// errWait when there was nothing to read.
func (t *streamTransport) readInto(fd int) error {
	if t.buf == nil {
		t.buf = chunks.Get().(*[]byte)
		t.r, t.w = 0, 0
	} else if t.r > 0 {
		t.w = copy(*t.buf, (*t.buf)[t.r:t.w])
		t.r = 0
	}
	room := (*t.buf)[t.w:]
	n, err := sysRead(fd, room)
	for err == syscall.EINTR {
		n, err = sysRead(fd, room)
	}
	switch {
	case err == syscall.EAGAIN:
		t.more = false
		return errWait
	case err != nil:
		return os.NewSyscallError("read", err)
	case n == 0:
		if t.w > t.r {
			return io.ErrUnexpectedEOF
		}
		return io.EOF
	}
	t.w += n
	t.more = n == len(room)
	return nil
}

// fill reads more bytes. With nothing buffered it gives the chunk back
// and waits with only the idle array; once bytes come, they go into a
// chunk.
func (t *streamTransport) fill() error {
	if t.buf == nil || t.r == t.w {
		if t.buf != nil {
			chunks.Put(t.buf)
			t.buf = nil
		}
		if t.raw != nil {
			return t.fillRaw()
		}
		n, err := t.c.Read(t.idle[:])
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
		t.buf = chunks.Get().(*[]byte)
		t.r, t.w = 0, copy(*t.buf, t.idle[:n])
		return nil
	}
	if t.r > 0 {
		t.w = copy(*t.buf, (*t.buf)[t.r:t.w])
		t.r = 0
	}
	n, err := t.c.Read((*t.buf)[t.w:])
	t.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// fillRaw waits, holding no buffer, until the socket is readable, and
// reads into a chunk.
func (t *streamTransport) fillRaw() error {
	if err := t.raw.Read(t.rawFn); err != nil {
		return err
	}
	n, err := t.rawN, t.rawErr
	if n > 0 {
		t.r, t.w = 0, n
		return nil
	}
	chunks.Put(t.buf)
	t.buf = nil
	if err == nil {
		return io.EOF // a read of 0 bytes: the peer closed its side
	}
	return os.NewSyscallError("read", err)
}

// rawRead is one read of the descriptor into a chunk; false (wait for
// readability) when nothing is there. The chunk stays in t.buf whatever
// else the read returned, for fillRaw to give back.
func (t *streamTransport) rawRead(fd uintptr) bool {
	b := chunks.Get().(*[]byte)
	n, err := sysRead(int(fd), *b)
	for err == syscall.EINTR {
		n, err = sysRead(int(fd), *b)
	}
	if err == syscall.EAGAIN {
		chunks.Put(b)
		return false
	}
	t.buf, t.rawN, t.rawErr = b, max(n, 0), err
	return true
}

// tryWrite writes what of b the socket takes now, without waiting for it
// to take more.
func (t *streamTransport) tryWrite(b []byte) (int, error) {
	t.tryB = b
	err := t.raw.Write(t.tryFn)
	n, werr := t.tryN, t.tryErr
	t.tryB, t.tryErr = nil, nil
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN:
		return 0, nil
	case werr != nil:
		return 0, os.NewSyscallError("write", werr)
	}
	return n, nil
}

// rawWrite is one write of the descriptor; it never asks to wait.
func (t *streamTransport) rawWrite(fd uintptr) bool {
	n, err := sysWrite(int(fd), t.tryB)
	for err == syscall.EINTR {
		n, err = sysWrite(int(fd), t.tryB)
	}
	t.tryN, t.tryErr = max(n, 0), err
	return true
}

// need makes at least n bytes buffered (n <= readChunk).
func (t *streamTransport) need(n int) error {
	for t.buf == nil || t.w-t.r < n {
		if err := t.fill(); err != nil {
			if errors.Is(err, io.EOF) && t.buf != nil && t.w > t.r {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func (t *streamTransport) readFrame(limit int) ([]byte, error) {
	t.big = nil
	if err := t.need(1); err != nil {
		return nil, err
	}
	if err := t.need(HeaderLen((*t.buf)[t.r])); err != nil {
		return nil, err
	}
	b := (*t.buf)[t.r:t.w]
	hdr, size, err := FrameSize(b)
	if err != nil && !errors.Is(err, ErrTooLarge) {
		return nil, err
	}
	if err != nil || size > limit {
		return nil, t.skip(hdr, size)
	}
	if size <= readChunk {
		if err := t.need(size); err != nil {
			return nil, err
		}
		f := (*t.buf)[t.r : t.r+size]
		t.r += size
		return f, nil
	}
	// Larger than a chunk (limit allows it): a buffer of its own.
	t.big = make([]byte, size)
	n := copy(t.big, (*t.buf)[t.r:t.w])
	t.r += n
	if _, err := io.ReadFull(t.c, t.big[n:]); err != nil {
		return nil, err
	}
	return t.big, nil
}

// skip reads past a frame over the limit, keeping its code and token.
func (t *streamTransport) skip(hdr, size int) error {
	tkl := int((*t.buf)[t.r] & 0x0f)
	if err := t.need(hdr + tkl); err != nil {
		return err
	}
	b := (*t.buf)[t.r:]
	e := &oversize{code: coap.Code(b[hdr-1]), token: append([]byte(nil), b[hdr:hdr+tkl]...), size: size}
	if size <= 0 || size > maxSkip {
		e.fatal = true
		return e
	}
	left := size
	for left > 0 {
		if t.w == t.r {
			if err := t.fill(); err != nil {
				return err
			}
		}
		n := min(left, t.w-t.r)
		t.r += n
		left -= n
	}
	return e
}

func (t *streamTransport) write(frames []out) error {
	if len(frames) == 1 {
		_, err := t.c.Write(frames[0].b)
		return err
	}
	bufs := make(net.Buffers, len(frames))
	for i, f := range frames {
		bufs[i] = f.b
	}
	_, err := bufs.WriteTo(t.c)
	return err
}
