package bridge

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

// fuzzWriter stands in for the endpoint's writer of one client's request:
// it keeps the first answer and takes notifications, as an observer's
// writer does.
type fuzzWriter struct {
	mu       sync.Mutex
	resp     *coap.Message
	notified int
	peer     netip.AddrPort
	token    []byte
}

func (w *fuzzWriter) WriteResponse(resp *coap.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resp != nil {
		return coap.ErrAnswered
	}
	w.resp = resp.Clone()
	return nil
}

func (w *fuzzWriter) Notify(resp *coap.Message, con bool, done func(error)) error {
	if _, err := resp.Marshal(); err != nil {
		return err
	}
	w.mu.Lock()
	w.notified++
	w.mu.Unlock()
	return nil
}

func (w *fuzzWriter) Peer() netip.AddrPort { return w.peer }
func (w *fuzzWriter) Token() []byte        { return w.token }

// FuzzChain feeds whatever decodes as a request through the whole chain:
// access, Hop-Limit, the guard, local resources, the Observe hub, the
// broker, the cache and the router, with an origin, a reverse route and
// the broker configured. Whatever the options and payload, the chain must
// answer, refuse or forward it without a panic, and an answer must encode.
func FuzzChain(f *testing.F) {
	origin := newRecorder(f, content("21.5"))
	p := startProxy(f, func(c *Config) {
		c.Proxy.Timeout = Duration{200 * time.Millisecond}
		c.Proxy.Rate = 0
		c.Route = []RouteConfig{{Name: "node1", Target: "coap://" + origin.addr.String() + "/base"}}
		c.PubSub = pubsub.Defaults()
		c.PubSub.Enabled = true
		c.PubSub.StateDir = f.TempDir()
	})
	target := "coap://" + origin.addr.String() + "/bench"
	name, rt := "temp", pubsub.RTData
	props := pubsub.Properties{TopicName: &name, ResourceType: &rt}
	topic, err := props.Encode()
	if err != nil {
		f.Fatal(err)
	}
	seeds := []*coap.Message{
		{Type: coap.Confirmable, Code: coap.GET, Token: []byte{1}, Options: proxyURI(target)},
		{Type: coap.Confirmable, Code: coap.GET, Token: []byte{2}, Options: proxyURI(target).SetUint(coap.Observe, 0)},
		{Type: coap.NonConfirmable, Code: coap.PUT, Token: []byte{3}, Options: proxyURI(target).Insert(coap.OSCORE, []byte{0x09, 0x14}), Payload: []byte{0x61, 0x2f}},
		{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(".well-known/core").Insert(coap.URIQuery, []byte("rt=core.ps.coll"))},
		{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts("node1/temp")},
		{Type: coap.Confirmable, Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: topic},
		{Type: coap.Confirmable, Code: coap.FETCH, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: []byte{0xa0}},
		{Type: coap.Confirmable, Code: coap.GET, Options: proxyURI(target).Insert(coap.HopLimit, []byte{1})},
		{Type: coap.Confirmable, Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyScheme, []byte("coap")).Insert(coap.URIHost, []byte("127.0.0.1"))},
	}
	for _, m := range seeds {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Loopback is verified; 192.0.2.7 is not: its answers must stay
	// within three times its requests (amplification).
	verified, unverified := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("192.0.2.7:40000")
	f.Fuzz(func(t *testing.T, b []byte) {
		var m coap.Message
		if m.Decode(b) != nil || !m.Code.IsRequest() {
			return
		}
		for _, peer := range []netip.AddrPort{verified, unverified} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			w := &fuzzWriter{peer: peer, token: m.Token}
			err := p.serveChain(ctx, w, &coap.Request{Msg: m.Clone(), Peer: peer})
			cancel()
			w.mu.Lock()
			resp := w.resp
			w.mu.Unlock()
			if resp == nil {
				continue // refused with err, left for later, or No-Response
			}
			if err != nil {
				t.Fatalf("answered %v and returned %v", resp.Code, err)
			}
			if _, err := resp.Marshal(); err != nil {
				t.Fatalf("answer %v does not encode: %v", resp.Code, err)
			}
			if size := resp.Size() - len(resp.Token) + len(m.Token); peer == unverified && size > 3*m.Size() {
				t.Fatalf("answer %v of %d bytes to an unverified %d-byte request", resp.Code, size, m.Size())
			}
		}
	})
}
