package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Twenty observers of a radio node's resource through the proxy: the node
// sees one registration, every notification crosses the air once whatever
// the number of observers, each observer sees its own increasing Observe
// numbers (PR4.2), and when they leave the node's observation is cancelled.
func TestObserveFanOutOneRadioRegistrationConstantAirtime(t *testing.T) {
	p, n := startSimProxy(t)
	node := n.SimNodes()[0]
	const observers = 20
	type obs struct {
		o    *coap.Observation
		seqs chan uint32
	}
	var all []obs
	for i := 0; i < observers; i++ {
		c := client(t)
		seqs := make(chan uint32, 64)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		req := &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 0, "/sensors/temp"))}
		first, o, err := c.Observe(ctx, p.Addrs()[0], req, func(m *coap.Message) {
			if v, ok := m.Options.Uint(coap.Observe); ok {
				seqs <- v
			}
		})
		cancel()
		if err != nil || o == nil {
			t.Fatalf("observer %d: %v %v", i, first, err)
		}
		v, _ := first.Options.Uint(coap.Observe)
		seqs <- v
		all = append(all, obs{o, seqs})
	}
	if got := node.Observers(); got != 1 {
		t.Fatalf("the node has %d observers, want 1 upstream registration for %d clients", got, observers)
	}
	// Wait for one notification at every observer and count frames on
	// the air meanwhile: one notification (and at most its ACK), however
	// many observers.
	framesBefore := n.Air().Stats().Frames
	last := make([]uint32, observers)
	for i, o := range all {
		last[i] = <-o.seqs // the registration's number
	}
	deadline := time.After(15 * time.Second)
	for i, o := range all {
		select {
		case v := <-o.seqs:
			if v <= last[i] {
				t.Fatalf("observer %d: Observe %d after %d", i, v, last[i])
			}
			last[i] = v
		case <-deadline:
			t.Fatalf("observer %d got no notification", i)
		}
	}
	if frames := n.Air().Stats().Frames - framesBefore; frames > 4 {
		t.Fatalf("%d frames on the air for one notification to %d observers", frames, observers)
	}
	for _, o := range all {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		o.o.Cancel(ctx)
		cancel()
	}
	testutil.EventuallyWithin(t, 15*time.Second, "the node's observation cancelled after the last observer left", func() bool { return node.Observers() == 0 })
}
