package bridge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// observable is an origin with one observable resource: it counts
// registrations and deregistrations and notifies every observer it holds.
type observableOrigin struct {
	mu     sync.Mutex
	regs   int
	deregs int
	obs    []coap.NotifyWriter
	value  int
	pad    int // bytes of padding after the value in each representation
}

func (o *observableOrigin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	resp := &coap.Message{Code: coap.Content, Payload: o.representation()}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 60)
	switch v, ok := r.Msg.Options.Uint(coap.Observe); {
	case ok && v == 0:
		o.regs++
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		o.obs = append(o.obs, nw)
		resp.Options = resp.Options.SetUint(coap.Observe, uint32(o.value+2))
	case ok && v == 1:
		o.deregs++
		o.obs = nil
	}
	return w.WriteResponse(resp)
}

// representation is the current state; o.mu is held.
func (o *observableOrigin) representation() []byte {
	return append([]byte(fmt.Sprintf("v%03d;", o.value)), make([]byte, o.pad)...)
}

func (o *observableOrigin) notify() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.value++
	for _, w := range o.obs {
		n := &coap.Message{Code: coap.Content, Payload: o.representation()}
		n.Options = n.Options.SetUint(coap.Observe, uint32(o.value+2)).SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 60)
		w.Notify(n, false, func(err error) {
			if err != nil {
				o.mu.Lock()
				o.deregs++
				o.obs = nil
				o.mu.Unlock()
			}
		})
	}
}

// Fifty libcoap observers through gatewayd: the origin sees one
// registration, every observer sees the states in order and ends on the
// last one, and when they have all left the origin's observation ends.
func TestFiftyLibcoapObserversOneUpstreamRegistration(t *testing.T) {
	origin, uri := observableServer(t)
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} })
	const observers = 50
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*testpeer.Libcoap, observers)
	for i := range clients {
		// -s 30: the first clients still observe when the last have
		// started and registered, on a loaded machine too.
		clients[i] = testpeer.StartLibcoap(ctx, t, i, "-s", "30", "-B", "32", "-m", "get",
			"-P", "coap://"+p.Addrs()[0].String(), uri)
	}
	// what is what client i did, for a failure message.
	what := func(i int) string {
		return fmt.Sprintf("hub %+v\nproxy endpoint %+v\nclient %d's log:\n%s", p.Hub().Stats(), p.servers[0].Stats(), i, clients[i].Log())
	}
	// Wait until the clients are registered with the hub, then change the
	// state a few times.
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
		testutil.EventuallyWithin(t, 25*time.Second, fmt.Sprintf("%d observers registered with the hub", observers), func() bool { return p.Hub().Stats().Observers >= observers })
	}()
	// One state at a time: the next once every observer was sent this
	// one, or a newer one replaced it in its slot.
	fanned := func() uint64 { s := p.Hub().Stats(); return s.NotificationsOut + s.Skipped }
	before := fanned()
	for i := 1; i <= 5; i++ {
		origin.notify()
		testutil.Eventually(t, fmt.Sprintf("state %d fanned out", i), func() bool { return fanned() >= before+uint64(i*observers) })
	}
	for i, c := range clients {
		if err := c.Wait(); err != nil {
			t.Errorf("coap-client %d: %v\n%s", i, err, what(i))
		}
	}
	origin.mu.Lock()
	regs, last := origin.regs, origin.value
	origin.mu.Unlock()
	if regs != 1 {
		t.Fatalf("the origin saw %d registrations for %d observers, want 1", regs, observers)
	}
	for i, c := range clients {
		var seen []int
		for _, f := range strings.Split(c.Payloads(), ";") {
			if j := strings.LastIndex(f, "v"); j >= 0 {
				if n, err := strconv.Atoi(strings.TrimSpace(f[j+1:])); err == nil {
					seen = append(seen, n)
				}
			}
		}
		if len(seen) == 0 || seen[len(seen)-1] != last {
			t.Fatalf("observer %d saw %v, want it to end on v%03d\n%s", i, seen, last, what(i))
		}
		// A client whose registration was retransmitted (CON, §4.2) gets
		// it answered once per transmission: the hub updates the observer
		// with that token and answers with the current state again (RFC
		// 7641 §4.1). So the first state may come more than once; after
		// it, every state is newer than the one before.
		if k := firstStateRepeats(seen); k > 0 {
			t.Logf("observer %d got its registration answered %d times: %v", i, k+1, seen)
			seen = seen[k:]
		}
		for k := 1; k < len(seen); k++ {
			if seen[k] <= seen[k-1] {
				t.Fatalf("observer %d saw states out of order: %v\n%s", i, seen, what(i))
			}
		}
	}
	// libcoap deregisters when it exits; once all have, the hub cancels
	// the origin's observation.
	testutil.EventuallyWithin(t, 20*time.Second, "the upstream observation cancelled after every observer left", func() bool {
		origin.mu.Lock()
		done := origin.deregs > 0
		origin.mu.Unlock()
		return done && p.Hub().Stats().Upstreams == 0
	})
}

// firstStateRepeats is how many times the first of seen comes again right
// after it.
func firstStateRepeats(seen []int) int {
	k := 0
	for k+1 < len(seen) && seen[k+1] == seen[0] {
		k++
	}
	return k
}

// observableServer runs an observableOrigin on a socket of its own.
func observableServer(t *testing.T) (*observableOrigin, string) {
	t.Helper()
	origin := &observableOrigin{}
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oe := coap.NewEndpoint(u, coap.EndpointConfig{Handler: origin})
	t.Cleanup(func() { oe.Close() })
	return origin, "coap://" + u.LocalAddr().String() + "/obs"
}
