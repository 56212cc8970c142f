package observe

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

// The OnNotify hook (the proxy's cache) hears of a notification before any
// observer is told of it: an observer that goes on to fetch the rest of a
// block-wise notification (RFC 7959 §3) must find the cache holding the new
// representation, never the old one's blocks.
func TestOnNotifyRunsBeforeObserversAreTold(t *testing.T) {
	var w atomic.Pointer[watcher]
	var early, hooked atomic.Int32
	r := newRig(t, Defaults(), coap.Params{}, WithOnNotify(func(_ string, n *coap.Message) {
		o := w.Load()
		if o == nil {
			return
		}
		// Time for an observer told first to have the notification.
		time.Sleep(30 * time.Millisecond)
		if o.last() == string(n.Payload) {
			early.Add(1)
		}
		hooked.Add(1)
	}))
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	w.Store(observeAt(t, client, r.proxy, get("temp")))
	const n = 5
	for i := range n {
		r.origin.push(t, content(fmt.Sprintf("v%d", i+1), uint32(i+2)), false)
		testutil.EventuallyWithin(t, 5*time.Second, "the observer on the new state", func() bool { return w.Load().last() == fmt.Sprintf("v%d", i+1) })
	}
	if hooked.Load() != n {
		t.Fatalf("hook saw %d notifications, want %d", hooked.Load(), n)
	}
	if e := early.Load(); e != 0 {
		t.Fatalf("the observer had %d of %d notifications before the hook ran", e, n)
	}
}
