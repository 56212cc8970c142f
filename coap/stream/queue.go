package stream

import (
	"fmt"
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// How a frame's sender takes part in writing it, when no one else is
// writing the connection's queue.
type sendMode uint8

const (
	// sendBlock: the sender writes the queue itself, waiting for the
	// socket if it must (a handler's goroutine, the connection's reader).
	sendBlock sendMode = iota
	// sendAsync: a goroutine writes it; the sender never waits (a
	// notification: its producer never waits for a client).
	sendAsync
	// sendTry: the sender writes the queue if the socket takes it at once
	// and leaves the rest to a goroutine, so it never waits for a client:
	// an answer written from an upstream socket's reader, which serves
	// every client (TCP only; elsewhere sendAsync).
	sendTry
)

// sendMsg frames m and sends it (send).
func (c *Conn) sendMsg(m *coap.Message, done func(error), block bool) error {
	mode := sendAsync
	if block {
		mode = sendBlock
	}
	return c.sendFrame(m, done, nil, mode)
}

// sendFrame frames m and queues it; w, when not nil, is the writer whose
// response it is, told once it is written (written).
func (c *Conn) sendFrame(m *coap.Message, done func(error), w *writer, mode sendMode) error {
	size := Size(m, c.t.ws())
	if m.Code != CSM && m.Code != Abort && int64(size) > c.peerMax.Load() {
		c.st.tooBig.Add(1)
		return fmt.Errorf("%w: %d bytes, peer takes %d", ErrTooBig, size, c.peerMax.Load())
	}
	var b []byte
	var pool *[]byte
	if size <= maxPooledFrame {
		pool = framePool.Get().(*[]byte)
		b = (*pool)[:0]
	}
	b, err := AppendFrame(b, m, c.t.ws())
	if err != nil {
		if pool != nil {
			framePool.Put(pool)
		}
		return err
	}
	return c.send(out{b: b, done: done, w: w, pool: pool}, mode)
}

const maxPooledFrame = 2048

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, maxPooledFrame); return &b }}

// send queues a frame; mode says who writes it if no one is writing
// already. Past MaxBuffered bytes waiting, the connection is closed: its
// peer does not read. A frame not queued (the error says why) is not
// settled: its sender learns of it from the error.
func (c *Conn) send(o out, mode sendMode) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		recycle(o)
		return ErrClosed
	}
	if c.queued > 0 && c.queued+len(o.b) > c.cfg.MaxBuffered {
		c.mu.Unlock()
		recycle(o)
		c.st.overflow.Add(1)
		c.closeWith(ErrOverflow)
		return ErrOverflow
	}
	c.queue = append(c.queue, o)
	c.queued += len(o.b)
	if c.writing {
		c.mu.Unlock()
		return nil
	}
	c.writing = true
	c.mu.Unlock()
	switch mode {
	case sendBlock:
		c.flush()
		return nil
	case sendTry:
		if c.tryFlush() {
			return nil
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.flush()
	}()
	return nil
}

// recycle gives a frame's buffer back to the pool it came from, through
// the pointer it came in: a new one would allocate for every frame.
func recycle(o out) {
	if o.pool != nil {
		framePool.Put(o.pool)
	}
}

// settle tells a frame's sender how its write went and recycles it.
func settle(o out, err error) {
	if o.done != nil {
		o.done(err)
	}
	if o.w != nil {
		o.w.written(err)
	}
	recycle(o)
}

// keptQueue bounds the queue array a connection keeps between writes:
// small, so that an idle connection holds little.
const keptQueue = 4

// flush writes the queue until it is empty.
func (c *Conn) flush() {
	var q []out
	for {
		c.mu.Lock()
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			if !c.closed && c.queue == nil && cap(q) <= keptQueue {
				c.queue = q[:0] // the next frame's append needs no new array
			}
			c.mu.Unlock()
			return
		}
		q, c.queue = c.queue, q[:0]
		c.queued = 0
		c.mu.Unlock()
		err := c.t.write(q) // a closeAfterFlush mark has no bytes: skipped
		if err == nil {
			c.st.sent.Add(uint64(len(q)))
		}
		for i, o := range q {
			settle(o, err)
			q[i] = out{}
		}
		if err != nil {
			c.closeWith(fmt.Errorf("stream: write: %w", err))
			return
		}
	}
}

// tryFlush is flush for a caller that must not wait: over TCP, a queue of
// one frame is written if the socket takes it whole at once, which it
// does unless the peer is slow to read. It returns false, the caller
// still the writer, when a goroutine is to write what is left.
func (c *Conn) tryFlush() bool {
	st, ok := c.t.(*streamTransport)
	if !ok || st.raw == nil {
		return false
	}
	c.mu.Lock()
	if c.closed || len(c.queue) != 1 {
		c.mu.Unlock()
		return false
	}
	o := c.queue[0]
	c.queue[0] = out{}
	c.queue, c.queued = c.queue[:0], 0
	c.mu.Unlock()
	n, err := st.tryWrite(o.b)
	if err != nil {
		settle(o, err)
		c.closeWith(fmt.Errorf("stream: write: %w", err))
		return true
	}
	if n == len(o.b) {
		c.st.sent.Add(1)
		settle(o, nil)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			return true
		}
		return false // more came meanwhile
	}
	// The socket is full: what is left of the frame goes first.
	o.b = o.b[n:]
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		settle(o, ErrClosed)
		return true
	}
	c.queue = append(c.queue, out{})
	copy(c.queue[1:], c.queue)
	c.queue[0] = o
	c.queued += len(o.b)
	c.mu.Unlock()
	return false
}
