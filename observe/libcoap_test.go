package observe

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// Fifty libcoap observers share one upstream observation; each sees the
// states in order and ends on the latest; when the last one leaves (libcoap
// deregisters when -s runs out) the upstream observation is cancelled.
func TestLibcoapObserversShareOneUpstream(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	const observers = 50
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*testpeer.Libcoap, observers)
	for i := range clients {
		// -s 30: long enough that the first clients are still observing
		// when the last have started and registered, on a loaded machine
		// too.
		clients[i] = testpeer.StartLibcoap(ctx, t, i, "-s", "30", "-m", "get", fmt.Sprintf("coap://%s/temp", r.proxy))
	}
	// what is what client i did, for a failure message.
	what := func(i int) string {
		return fmt.Sprintf("hub %+v\nendpoint %+v\nclient %d's log:\n%s", r.hub.Stats(), r.pe.Stats(), i, clients[i].Log())
	}
	func() {
		defer func() {
			if !t.Failed() {
				return
			}
			for i, c := range clients {
				if c.Payloads() == "" {
					t.Logf("client %d has nothing yet\n%s", i, what(i))
				}
			}
		}()
		testutil.EventuallyWithin(t, 25*time.Second, fmt.Sprintf("%d observers registered", observers), func() bool { return r.hub.Stats().Observers >= observers })
	}()
	if n := r.origin.registrations(); n != 1 {
		t.Fatalf("origin saw %d registrations, want 1", n)
	}
	const states = 10
	// One state at a time: the next once every observer was sent this
	// one, or a newer one replaced it in its slot.
	fanned := func() uint64 { s := r.hub.Stats(); return s.NotificationsOut + s.Skipped }
	before := fanned()
	for i := 1; i <= states; i++ {
		r.origin.push(t, content(fmt.Sprintf("s%02d", i), uint32(i+1)), false)
		testutil.Eventually(t, fmt.Sprintf("s%02d fanned out", i), func() bool { return fanned() >= before+uint64(i*observers) })
	}
	for i, c := range clients {
		if err := c.Wait(); err != nil {
			t.Errorf("coap-client %d: %v\n%s", i, err, what(i))
		}
	}
	for i, c := range clients {
		// coap-client writes payloads back to back: the states are
		// fixed-width for that.
		out := c.Payloads()
		got := stateRE.FindAllString(out, -1)
		if len(got) == 0 || got[len(got)-1] != fmt.Sprintf("s%02d", states) {
			t.Fatalf("observer %d output %q: does not end on the latest state\n%s", i, out, what(i))
		}
		// The first state comes once per transmission of a retransmitted
		// registration (RFC 7641 §4.1); after it, every state is newer
		// (s01 < s02 < ...; the first, v0, is compared with none).
		for len(got) > 1 && got[1] == got[0] {
			got = got[1:]
		}
		for j := 2; j < len(got); j++ {
			if got[j] <= got[j-1] {
				t.Fatalf("observer %d saw %q after %q\n%s", i, got[j], got[j-1], what(i))
			}
		}
	}
	testutil.EventuallyWithin(t, 15*time.Second, "all observers gone", func() bool { return r.hub.Stats().Observers == 0 })
	testutil.EventuallyWithin(t, 10*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })
	t.Logf("stats %+v", r.hub.Stats())
}

var stateRE = regexp.MustCompile(`v0|s[0-9]{2}`)
