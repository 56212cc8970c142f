package bridge

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// startSimProxy runs a proxy with a simulated radio: a fake RCP on a
// pseudo-terminal driven through the real Spinel driver, three nodes.
func startSimProxy(t *testing.T) (*Proxy, *sim.Network) {
	t.Helper()
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
	})
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	n, ok := sim.FromLink(r.Link())
	if !ok {
		t.Fatal("not a sim network")
	}
	return p, n
}

func nodeURI(n *sim.Network, i int, path string) string {
	return fmt.Sprintf("coap://[%v]%s", n.Nodes()[i], path)
}

func TestRadioNodeGetPutAndFragmentedPayloadThroughProxy(t *testing.T) {
	p, n := startSimProxy(t)
	c := client(t)
	get := &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 0, "/sensors/temp"))}
	if resp := do(t, c, p, get); resp.Code != coap.Content || len(resp.Payload) == 0 {
		t.Fatalf("GET temp: %v %q", resp.Code, resp.Payload)
	}
	put := &coap.Message{Code: coap.PUT, Options: proxyURI(nodeURI(n, 1, "/actuators/valve")), Payload: []byte("open")}
	if resp := do(t, c, p, put); resp.Code != coap.Changed {
		t.Fatalf("PUT valve: %v", resp.Code)
	}
	if v := n.SimNodes()[1].Valve(); v != "open" {
		t.Fatalf("node valve = %q", v)
	}
	// 400 bytes each way: fragmented (RFC 4944 §5.3) on the air.
	body := bytes.Repeat([]byte("0123456789"), 40)
	frames := n.Air().Stats().Frames
	echo := &coap.Message{Code: coap.POST, Options: proxyURI(nodeURI(n, 2, "/echo")), Payload: body}
	resp := do(t, c, p, echo)
	if !bytes.Equal(resp.Payload, body) {
		t.Fatalf("echo: %v, %d bytes back", resp.Code, len(resp.Payload))
	}
	if sent := n.Air().Stats().Frames - frames; sent < 8 {
		t.Fatalf("a 400-byte exchange took %d frames; it must be fragmented both ways", sent)
	}
}

func TestCache100ClientsOneRadioExchangeDecreasingMaxAge(t *testing.T) {
	p, n := startSimProxy(t)
	node := n.SimNodes()[0]
	before := node.Requests()
	uri := nodeURI(n, 0, "/actuators/valve") // no Max-Age: cached for the default 60 s
	var wg sync.WaitGroup
	ages := make(chan uint32, 100)
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A hundred clients, each on an address of its own: one
			// address has max_inflight_per_client (64) requests at once.
			c := clientOn(t, fmt.Sprintf("127.0.1.%d", i+1))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: proxyURI(uri)})
			if err != nil {
				errs <- err
				return
			}
			if resp.Code != coap.Content || string(resp.Payload) != "closed" {
				errs <- fmt.Errorf("got %v %q", resp.Code, resp.Payload)
				return
			}
			ma, _ := resp.Options.Uint(coap.MaxAge)
			if _, ok := resp.Options.Uint(coap.MaxAge); !ok {
				ma = 60 // the origin's own answer has none: default 60 (§5.10.5)
			}
			ages <- ma
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := node.Requests() - before; got != 1 {
		t.Fatalf("100 clients caused %d radio exchanges, want 1", got)
	}
	close(ages)
	for a := range ages {
		if a > 60 {
			t.Fatalf("Max-Age %d above the original", a)
		}
	}
	time.Sleep(1100 * time.Millisecond) // let the entry age past a whole second
	resp := do(t, client(t), p, &coap.Message{Code: coap.GET, Options: proxyURI(uri)})
	if ma, ok := resp.Options.Uint(coap.MaxAge); !ok || ma >= 60 {
		t.Fatalf("Max-Age after >1 s in the cache = %d (present %v): PR3.4 wants original minus age", ma, ok)
	}
	if got := node.Requests() - before; got != 1 {
		t.Fatalf("a fresh hit reached the node (%d exchanges)", got)
	}
}

func TestRadioDownFailsFastWith503ThenRecovers(t *testing.T) {
	p, n := startSimProxy(t)
	c := client(t)
	req := &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 0, "/.well-known/core"))}
	if err := n.Port().Unplug(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the radio down", func() bool { return !p.Radios()[0].Up() })
	resp := do(t, c, p, req)
	if resp.Code != coap.ServiceUnavailable {
		t.Fatalf("radio down: got %v, want 5.03", resp.Code)
	}
	if ma, ok := resp.Options.Uint(coap.MaxAge); !ok || ma == 0 {
		t.Fatal("5.03 needs Max-Age as a retry hint")
	}
	if err := n.Port().Plug(); err != nil {
		t.Fatal(err)
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last answer: %s", last)
		}
	}()
	testutil.EventuallyWithin(t, 20*time.Second, "a 2.05 after the radio's return", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := c.Do(ctx, p.Addrs()[0], req)
		cancel()
		last = fmt.Sprint(resp, err)
		return err == nil && resp.Code == coap.Content
	})
}

// A frame the radio drops shows in the metrics under its reason.
func TestRadioDropsInMetricsByReason(t *testing.T) {
	p, n := startSimProxy(t)
	addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A data frame with MAC security on (frame control 0xA869), as every
	// Thread node sends: the gateway holds no MAC keys.
	secured := []byte{0x69, 0xa8, 0x42, 0xce, 0xfa, 0x01, 0x00, 0x42, 0x00, 0x00}
	if !n.RCP().Deliver(radio.Frame{Data: secured, RSSI: -50, LQI: 200}) {
		t.Fatal("the rcp did not pass the frame to the driver")
	}
	want := `gatewayd_radio_drops_total{radio="sim",reason="mac_secured"} 1`
	var body string
	testutil.Eventually(t, want, func() bool {
		body = httpGet(t, "http://"+addr+"/metrics")
		return strings.Contains(body, want)
	})
	for _, w := range []string{want, `gatewayd_radio_drops_total{radio="sim",reason="other_pan"} 0`} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %q", w)
		}
	}
}
