package bridge

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// node-coap (npm coap) is the second CoAP implementation, after libcoap,
// that talks to gatewayd in these tests: a client written independently
// of both, in another language, decoding what gatewayd sends on its own.

func nodeCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func toProxy(p *Proxy) testpeer.NodeCoapRequest {
	a := p.Addrs()[0]
	return testpeer.NodeCoapRequest{Host: a.Addr().String(), Port: a.Port()}
}

// Forward-proxy GET and PUT (RFC 7252 §5.7.2) from node-coap through
// gatewayd: the origin gets the request with Proxy-Uri split into Uri-*
// options (PR1.1), node-coap gets the origin's response with its options
// and payload unchanged (PR1.3), and a second client's GET is a cache hit
// the origin never sees (§5.6, PR3.1).
func TestNodeCoapForwardGETAndPUTThroughGatewayd(t *testing.T) {
	o := newRecorder(t, func(m *coap.Message) *coap.Message {
		if m.Code == coap.PUT {
			r := &coap.Message{Code: coap.Changed, Payload: []byte("stored")}
			r.Options = r.Options.SetUint(coap.ContentFormat, 0)
			return r
		}
		return content("22.5")(m)
	})
	p := startProxy(t, nil)
	target := fmt.Sprintf("coap://%s/sensors/temp", o.addr)

	get := toProxy(p)
	get.ProxyURI = target
	resp := testpeer.NodeCoap(nodeCtx(t), t, get)
	in, out := o.last(t)
	if got := coap.URIFromOptions(in.Options, "", "", 0).Path; strings.Join(got, "/") != "sensors/temp" || in.Options.Has(coap.ProxyURI) || in.Code != coap.GET {
		t.Fatalf("origin got %v: want GET with Uri-Path sensors/temp and no Proxy-Uri", in)
	}
	if resp.Code != "2.05" || string(resp.Payload) != "22.5" {
		t.Fatalf("node-coap got %s %q, want 2.05 \"22.5\"", resp.Code, resp.Payload)
	}
	etag, _ := out.Options.Get(coap.ETag)
	if got, ok := resp.Option("ETag"); !ok || !bytes.Equal(got, etag) {
		t.Fatalf("node-coap got ETag %x (%v), the origin sent %x", got, ok, etag)
	}
	if got, ok := resp.Option("Max-Age"); !ok || coap.DecodeUint(got) != 30 {
		t.Fatalf("node-coap got Max-Age %x (%v), the origin sent 30", got, ok)
	}
	if _, ok := resp.Option("Content-Format"); !ok {
		t.Fatalf("node-coap got no Content-Format: %v", resp.Options)
	}

	// Another node-coap process, another socket: answered from the cache.
	again := testpeer.NodeCoap(nodeCtx(t), t, get)
	if again.Code != "2.05" || string(again.Payload) != "22.5" || o.count() != 1 {
		t.Fatalf("second GET: %s %q with the origin asked %d times, want a cache hit", again.Code, again.Payload, o.count())
	}

	// PUT in the Proxy-Scheme form (PR1.2), a body with every byte value.
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	put := toProxy(p)
	put.Method = "PUT"
	put.Pathname = "actuators/valve"
	put.Payload = body
	put.Options = map[string][]byte{
		"Proxy-Scheme":   []byte("coap"),
		"Uri-Host":       []byte(o.addr.Addr().String()),
		"Uri-Port":       coap.EncodeUint(uint32(o.addr.Port())),
		"Content-Format": coap.EncodeUint(42),
	}
	resp = testpeer.NodeCoap(nodeCtx(t), t, put)
	in, _ = o.last(t)
	if in.Code != coap.PUT || !bytes.Equal(in.Payload, body) || in.Options.Has(coap.ProxyScheme) {
		t.Fatalf("origin got %v with %d bytes, want the PUT's %d bytes without Proxy-Scheme", in, len(in.Payload), len(body))
	}
	if got := coap.URIFromOptions(in.Options, "", "", 0).Path; strings.Join(got, "/") != "actuators/valve" {
		t.Fatalf("origin got path %v", got)
	}
	if cf, ok := in.Options.Uint(coap.ContentFormat); !ok || cf != 42 {
		t.Fatalf("origin got Content-Format %d (%v), want 42", cf, ok)
	}
	if resp.Code != "2.04" || string(resp.Payload) != "stored" {
		t.Fatalf("node-coap got %s %q, want 2.04 \"stored\"", resp.Code, resp.Payload)
	}
	if o.count() != 2 {
		t.Fatalf("origin saw %d requests, want the GET and the PUT", o.count())
	}
}

// Four node-coap observers, each on a socket of its own, observe one
// resource through gatewayd: the origin sees one registration (RFC 7641
// §5), every observer gets every state, and when they have all
// deregistered the hub ends the origin's observation.
func TestNodeCoapObserversShareOneUpstreamObservation(t *testing.T) {
	origin, uri := observableServer(t)
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} })

	const observers = 4
	req := toProxy(p)
	req.ProxyURI = uri
	req.Observe = observers
	obs := testpeer.StartNodeCoapObservers(nodeCtx(t), t, req)

	// seen[i] is what observer i got, in order.
	seen := make([][]string, observers)
	waitAll := func(want string) {
		t.Helper()
		for !allEndOn(seen, want) {
			r := obs.Next(t, 10*time.Second)
			if r.Obs < 0 || r.Obs >= observers || r.Code != "2.05" {
				t.Fatalf("unexpected line from node-coap: %+v", r)
			}
			seen[r.Obs] = append(seen[r.Obs], string(r.Payload))
		}
	}
	waitAll("v000;")
	testutil.Eventually(t, fmt.Sprintf("%d observers in the hub", observers), func() bool { return p.Hub().Stats().Observers >= observers })
	// Each state is sent once every observer has the one before, so that
	// no slot is overwritten (latest-wins) and every state must arrive.
	for i := 1; i <= 3; i++ {
		origin.notify()
		waitAll(fmt.Sprintf("v%03d;", i))
	}
	origin.mu.Lock()
	regs := origin.regs
	origin.mu.Unlock()
	if regs != 1 {
		t.Fatalf("the origin saw %d registrations for %d node-coap observers, want 1", regs, observers)
	}
	for i, s := range seen {
		// A retransmitted registration is answered again (RFC 7641 §4.1):
		// the first state may repeat. After it, each state once, in order.
		want := []string{"v000;", "v001;", "v002;", "v003;"}
		for len(s) > len(want) && s[1] == s[0] {
			s = s[1:]
		}
		if strings.Join(s, "") != strings.Join(want, "") {
			t.Fatalf("observer %d saw %q, want %q", i, seen[i], want)
		}
	}

	obs.Stop(t, 15*time.Second)
	testutil.Eventually(t, "the hub empty and the origin deregistered after every node-coap observer left", func() bool {
		origin.mu.Lock()
		deregs := origin.deregs
		origin.mu.Unlock()
		st := p.Hub().Stats()
		return deregs > 0 && st.Upstreams == 0 && st.Observers == 0
	})
}

// allEndOn reports whether every observer's last state is want.
func allEndOn(seen [][]string, want string) bool {
	for _, s := range seen {
		if len(s) == 0 || s[len(s)-1] != want {
			return false
		}
	}
	return true
}

// blockOrigin serves one representation in Block2 blocks (RFC 7959 §2.4)
// of at most 64 bytes, or the size a request asks for if smaller, and
// counts the requests for each block.
type blockOrigin struct {
	body []byte

	mu    sync.Mutex
	asked map[uint32]int // guarded by mu: block number → requests
}

func (b *blockOrigin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	num, szx := uint32(0), uint32(2) // 64 bytes (§2.2: 2^(szx+4))
	if v, ok := r.Msg.Options.Uint(coap.Block2); ok {
		num, szx = v>>4, min(v&7, 2)
	}
	size := 1 << (szx + 4)
	start := int(num) * size
	if start >= len(b.body) {
		return coap.Errorf(coap.BadOption, "block %d out of range", num)
	}
	end := min(start+size, len(b.body))
	more := uint32(0)
	if end < len(b.body) {
		more = 1
	}
	b.mu.Lock()
	b.asked[num]++
	b.mu.Unlock()
	resp := &coap.Message{Code: coap.Content, Payload: b.body[start:end]}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 42).SetUint(coap.MaxAge, 60).
		SetUint(coap.Block2, num<<4|more<<3|szx).SetUint(coap.Size2, uint32(len(b.body)))
	return w.WriteResponse(resp)
}

// A 2,500-byte representation, 40 blocks of 64 bytes, GET by node-coap
// through gatewayd: node-coap follows the Block2 options gatewayd passes
// back and reassembles the body byte for byte; the origin is asked for
// each block once. A second GET is answered by gatewayd's cache, block by
// block (Block2 is part of the cache key).
func TestNodeCoapBlockwiseGETThroughGatewayd(t *testing.T) {
	body := make([]byte, 2500)
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	origin := &blockOrigin{body: body, asked: map[uint32]int{}}
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oe := coap.NewEndpoint(u, coap.EndpointConfig{Handler: origin})
	defer oe.Close()
	p := startProxy(t, nil)

	req := toProxy(p)
	req.ProxyURI = "coap://" + u.LocalAddr().String() + "/big"
	const blocks = (2500 + 63) / 64
	for run := 1; run <= 2; run++ {
		resp := testpeer.NodeCoap(nodeCtx(t), t, req)
		if resp.Code != "2.05" || !bytes.Equal(resp.Payload, body) {
			t.Fatalf("GET %d: node-coap got %s with %d bytes, want 2.05 with the %d bytes of the origin (equal: %v)",
				run, resp.Code, len(resp.Payload), len(body), bytes.Equal(resp.Payload, body))
		}
		origin.mu.Lock()
		asked := len(origin.asked)
		for num, n := range origin.asked {
			if n != 1 {
				t.Errorf("GET %d: the origin was asked for block %d %d times", run, num, n)
			}
		}
		origin.mu.Unlock()
		if asked != blocks {
			t.Fatalf("GET %d: the origin was asked for %d distinct blocks, want %d", run, asked, blocks)
		}
	}
}
