package observe

import (
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

// Two registrations from one client with one token (a client that
// re-registers before the first answer, RFC 7641 §4.1: "the entry is
// replaced") while the upstream registration is still in progress must
// leave one live observer of one live upstream observation. Today the
// second addLocked removes the first observer, which empties the entry and
// ends it (upstream cancelled), and then adds the second observer to the
// ended entry: it holds a reservation for ever and never hears anything.
func TestSameTokenReRegistrationWhileRegisteringKeepsTheObservation(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	gate := make(chan struct{})
	r.origin.mu.Lock()
	r.origin.gate, r.origin.entered = gate, make(chan struct{}, 1)
	r.origin.mu.Unlock()

	c := newRawClient(t, r.proxy)
	for i := 0; i < 2; i++ {
		m := get("temp")
		m.Type, m.MID, m.Token = coap.NonConfirmable, c.mid, []byte("tok")
		c.mid++
		m.Options = m.Options.SetUint(coap.Observe, 0)
		c.send(m)
	}
	<-r.origin.entered
	testutil.EventuallyWithin(t, 5*time.Second, "2 waiters", func() bool {
		r.hub.mu.Lock()
		defer r.hub.mu.Unlock()
		for _, e := range r.hub.entries {
			return len(e.waiters) == 2
		}
		return false
	})
	close(gate)
	c.read(5 * time.Second)
	c.read(5 * time.Second)

	// Both answered: the registration has ended, and the hub holds one
	// observer of one upstream observation (with the fault, none).
	testutil.Eventually(t, "one observer of one upstream observation", func() bool {
		s := r.hub.Stats()
		return s.Observers == 1 && s.Upstreams == 1
	})
	r.origin.push(t, content("v1", 2), false)
	n, err := c.tryRead(2 * time.Second)
	if err != nil || string(n.Payload) != "v1" {
		t.Fatalf("the client's observation got no notification (%v, %v); origin cancelled %d registrations", n, err, r.origin.cancelled())
	}
}
