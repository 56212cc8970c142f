package bridge

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/clock"
)

// slowClose is a connection whose Close blocks until let is closed, as a
// WebSocket connection's waits for its closing handshake.
type slowClose struct {
	closing, let, done chan struct{}
}

func (c *slowClose) gone() <-chan struct{} { return c.done }

func (c *slowClose) Close() error {
	close(c.closing)
	<-c.let
	close(c.done)
	return nil
}

// A dial that ends after the pool closed closes its connection without
// holding the pool's lock: the pool's other callers are not kept waiting
// for a slow close.
func TestDialEndingAfterCloseDoesNotCloseUnderTheLock(t *testing.T) {
	p := newPool(0, clock.System)
	c := &slowClose{closing: make(chan struct{}), let: make(chan struct{}), done: make(chan struct{})}
	dialing, dialed := make(chan struct{}), make(chan struct{})
	got := make(chan error, 1)
	go func() {
		_, _, err := p.get(context.Background(), originKey{scheme: "coap+ws", addr: netip.MustParseAddrPort("192.0.2.1:80")}, func(context.Context) (pooledConn, error) {
			close(dialing)
			<-dialed
			return c, nil
		})
		got <- err
	}()
	<-dialing
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	close(dialed)
	<-c.closing
	// The dialled connection is being closed, and its Close has not
	// returned: the pool's lock must be free.
	free := make(chan int)
	go func() { free <- p.len() }()
	select {
	case <-free:
	case <-time.After(10 * time.Second):
		close(c.let)
		t.Fatal("the pool's lock was held while a connection closed")
	}
	close(c.let)
	if err := <-got; !errors.Is(err, errPoolClosed) {
		t.Fatalf("get after Close: %v, want errPoolClosed", err)
	}
	if st := p.Stats(); st.Dials != 1 || st.DialFailures != 1 || st.Conns != 0 {
		t.Fatalf("stats %+v, want one dial, failed because the pool closed", st)
	}
}
