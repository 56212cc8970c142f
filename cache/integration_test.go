package cache_test

import (
	"context"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
)

// TestLibcoapClientTwoGETsReachOriginOnce runs the stage on a real UDP
// endpoint and asks twice with libcoap's client: the origin answers once.
func TestLibcoapClientTwoGETsReachOriginOnce(t *testing.T) {
	client, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatal("coap-client-notls (Debian libcoap3-bin) is required: ", err)
	}
	var calls atomic.Int32
	origin := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		calls.Add(1)
		m := &coap.Message{Code: coap.Content, Payload: []byte("22.5")}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 30)
		return w.WriteResponse(m)
	})
	c := cache.New(cache.Defaults())
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: c.Stage(origin)})
	defer e.Close()
	uri := "coap://" + u.LocalAddr().String() + "/sensors/temp"
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, client, "-m", "get", "-B", "10", uri).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("GET %d: %v: %s", i+1, err, out)
		}
		if !strings.Contains(string(out), "22.5") {
			t.Fatalf("GET %d printed %q", i+1, out)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("origin answered %d times, want 1", n)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Fatalf("stats %+v", s)
	}
}
