package observe

import (
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestCloseCancelsUpstreamAndLeaksNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		r := newRig(t, Defaults(), coap.Params{})
		client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
		w := observeAt(t, client, r.proxy, get("temp"))
		r.origin.push(t, content("v1", 2), false)
		testutil.EventuallyWithin(t, 5*time.Second, "v1", func() bool { return w.last() == "v1" })
		r.hub.Close()
		if r.origin.cancelled() != 1 {
			t.Fatal("Close did not cancel the upstream observation")
		}
		r.hub.Close() // idempotent
		if s := r.hub.Stats(); s.Observers != 0 || s.Upstreams != 0 {
			t.Fatalf("stats after Close %+v", s)
		}
		// After Close the stage still serves, without Observe.
		c2 := observeAt(t, client, r.proxy, get("temp"))
		if c2.obs != nil || c2.first.Code != coap.Content {
			t.Fatalf("after Close: %v", c2.first)
		}
	})
	testutil.EventuallyWithin(t, 10*time.Second, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base })
}

// The README names every config key and counter.
func TestREADMEDocumentsConfigAndCounters(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		if k := ct.Field(i).Tag.Get("toml"); !strings.Contains(readme, k) {
			t.Errorf("README.md does not mention config key %q", k)
		}
	}
	st := reflect.TypeOf(Stats{})
	for i := range st.NumField() {
		if n := st.Field(i).Name; !strings.Contains(readme, n) {
			t.Errorf("README.md does not mention counter %s", n)
		}
	}
}
