// Package radiotest provides an in-memory pair of radio.Links for tests:
// what one end sends, the other receives, with errors injectable on send.
package radiotest

import (
	"context"
	"sync"

	"github.com/opaque-edge/gatewayd/radio"
)

// QueueLen is how many frames a Link buffers before Send blocks.
const QueueLen = 64

// Link is one end of a Pair. It is safe for concurrent use.
type Link struct {
	inbox chan radio.Frame
	peer  *Link
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	sendErr func(mpdu []byte) error // guarded by mu
	rssi    int8                    // of the frames this end sends; guarded by mu
	lqi     uint8                   // guarded by mu
	sent    [][]byte                // frames this end sent, copied; guarded by mu
}

var _ radio.Link = (*Link)(nil)

// Pair returns two connected Links.
func Pair() (a, b *Link) {
	a = &Link{inbox: make(chan radio.Frame, QueueLen), done: make(chan struct{}), rssi: -40, lqi: 255}
	b = &Link{inbox: make(chan radio.Frame, QueueLen), done: make(chan struct{}), rssi: -40, lqi: 255}
	a.peer, b.peer = b, a
	return a, b
}

// FailSend makes Send call f first and, if f returns an error, return it
// without delivering the frame. nil clears it.
func (l *Link) FailSend(f func(mpdu []byte) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sendErr = f
}

// SetSignal sets the RSSI and LQI the peer receives this end's next
// frames with (-40 dBm and 255 at first).
func (l *Link) SetSignal(rssi int8, lqi uint8) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rssi, l.lqi = rssi, lqi
}

// Sent returns copies of the frames this end delivered, in order.
func (l *Link) Sent() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.sent...)
}

// Send delivers a copy of mpdu to the peer, blocking while the peer's
// queue is full.
func (l *Link) Send(ctx context.Context, mpdu []byte) error {
	if len(mpdu) > 125 {
		return radio.ErrTooLong
	}
	l.mu.Lock()
	f, rssi, lqi := l.sendErr, l.rssi, l.lqi
	l.mu.Unlock()
	if f != nil {
		if err := f(mpdu); err != nil {
			return err
		}
	}
	b := append([]byte(nil), mpdu...)
	select {
	case <-l.done:
		return radio.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	case <-l.peer.done:
		return radio.ErrNoAck // nobody there to acknowledge
	case l.peer.inbox <- radio.Frame{Data: b, RSSI: rssi, LQI: lqi}:
	}
	l.mu.Lock()
	l.sent = append(l.sent, b)
	l.mu.Unlock()
	return nil
}

// Recv returns the next frame the peer sent.
func (l *Link) Recv(ctx context.Context) (radio.Frame, error) {
	select {
	case <-l.done:
		return radio.Frame{}, radio.ErrClosed
	case <-ctx.Done():
		return radio.Frame{}, ctx.Err()
	case f := <-l.inbox:
		return f, nil
	}
}

// Close closes this end; it is idempotent.
func (l *Link) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}
