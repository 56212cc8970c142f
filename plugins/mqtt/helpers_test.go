package mqtt

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// need fails the test when a real peer is missing: scripts/test-deps.sh
// installs mosquitto and mosquitto-clients.
func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed (scripts/test-deps.sh installs it): %v", c, err)
		}
	}
}

// broker is a real mosquitto on 127.0.0.1 (internal/testpeer).
type broker = testpeer.Mosquitto

func startBroker(t *testing.T) *broker { return testpeer.StartMosquitto(t) }

// observable is a CoAP origin with one observable resource; notify sends a
// notification to every observer.
type observable struct {
	ep   *coap.Endpoint
	addr netip.AddrPort

	mu        sync.Mutex
	observers []coap.NotifyWriter // guarded by mu
	seq       uint32              // guarded by mu
	puts      []*coap.Message     // guarded by mu
	first     []byte              // guarded by mu: the payload of the first response
}

func newObservable(t *testing.T, first []byte) *observable {
	t.Helper()
	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &observable{addr: u.LocalAddr(), first: first}
	o.ep = coap.NewEndpoint(u, coap.EndpointConfig{Handler: coap.HandlerFunc(o.serve)})
	t.Cleanup(func() { o.ep.Close() })
	return o
}

func (o *observable) serve(_ context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Msg.Code == coap.PUT {
		o.puts = append(o.puts, r.Msg.Clone())
		return w.WriteResponse(&coap.Message{Code: coap.Changed})
	}
	resp := &coap.Message{Code: coap.Content, Payload: o.first}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 18)
	if v, ok := r.Msg.Options.Uint(coap.Observe); ok && v == 0 {
		if nw, ok := w.(coap.NotifyWriter); ok {
			o.observers = append(o.observers, nw)
			resp.Options = resp.Options.SetUint(coap.Observe, o.seq)
		}
	}
	return w.WriteResponse(resp)
}

func (o *observable) notify(payload []byte) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	m := &coap.Message{Code: coap.Content, Payload: payload}
	m.Options = m.Options.SetUint(coap.Observe, o.seq).SetUint(coap.ContentFormat, 18)
	for _, w := range o.observers {
		_ = w.Notify(m, false, nil)
	}
	return len(o.observers)
}

func (o *observable) putsSeen() []*coap.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*coap.Message(nil), o.puts...)
}

// chain stands in for gatewayd's chain: a CoAP client endpoint that sends
// every request to the origin after splitting Proxy-Uri, and observes with
// the endpoint's Observe.
type chain struct {
	ep *coap.Endpoint
	to netip.AddrPort
}

func newChain(t *testing.T, to netip.AddrPort) *chain {
	t.Helper()
	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &chain{ep: coap.NewEndpoint(u, coap.EndpointConfig{Params: coap.Params{AckTimeout: 200 * time.Millisecond}}), to: to}
	t.Cleanup(func() { c.ep.Close() })
	return c
}

func (c *chain) do(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
	out := *req
	out.Options = append(coap.Options(nil), req.Options...)
	if pu, ok := out.Options.Get(coap.ProxyURI); ok {
		u, err := coap.ParseURI(string(pu))
		if err != nil {
			return nil, err
		}
		out.Options = u.SetOptions(out.Options.Remove(coap.ProxyURI), u.Port)
	}
	return c.ep.Do(ctx, c.to, &out)
}

// observe observes uri at the origin until ctx is done; it ends with an
// error when the origin does not register the observation.
func (c *chain) observe(ctx context.Context, uri string, fn func(*coap.Message)) error {
	u, err := coap.ParseURI(uri)
	if err != nil {
		return err
	}
	// fn is called from one goroutine at a time, never after return.
	var mu sync.Mutex
	ended := false
	once := func(m *coap.Message) {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			fn(m)
		}
	}
	defer func() {
		mu.Lock()
		ended = true
		mu.Unlock()
	}()
	req := &coap.Message{Code: coap.GET, Options: u.SetOptions(nil, u.Port)}
	resp, obs, err := c.ep.Observe(ctx, c.to, req, once)
	if err != nil {
		return err
	}
	once(resp)
	if obs == nil {
		return fmt.Errorf("not observable: %v", resp.Code)
	}
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = obs.Cancel(cctx)
	return ctx.Err()
}

// runBridge runs b until the test ends and checks that Run returns.
func runBridge(t *testing.T, b *Bridge) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
}
