package bridge

import (
	"fmt"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
)

// A forwarded request from a stream client runs on its connection's
// reader and is answered from the upstream's reader, as over UDP; a
// request for the proxy's own resources is not, and is answered all the
// same.
func TestStreamForwardedRequestsAreServedOnTheReader(t *testing.T) {
	o := newRecorder(t, content("22.5 C"))
	p := startStreamProxy(t, nil, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	for i, scheme := range []string{"tcp", "ws"} {
		t.Run(scheme, func(t *testing.T) {
			s := p.streams[i].s
			c := dialStream(t, cl, scheme, p.StreamAddrs()[i], nil)
			for n := range 3 {
				req := &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://%v/fwd/%s/%d", o.addr, scheme, n))}
				if resp := doStream(t, c, req); resp.Code != coap.Content || string(resp.Payload) != "22.5 C" {
					t.Fatalf("forwarded: %v %q", resp.Code, resp.Payload)
				}
			}
			wk := &coap.Message{Code: coap.GET}
			wk.Options = wk.Options.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))
			if resp := doStream(t, c, wk); resp.Code != coap.Content {
				t.Fatalf("/.well-known/core: %v", resp.Code)
			}
			st := s.Stats()
			if st.Inline != 3 || st.Requests != 4 {
				t.Fatalf("Inline %d of Requests %d, want the 3 forwarded of 4", st.Inline, st.Requests)
			}
		})
	}
}
