package bridge

import (
	"context"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// A coap+ws origin that is not gatewayd's code: node's npm ws, with the
// CoAP framing of RFC 8323 §4.2 written in the script from the RFC
// (internal/testpeer/nodecoap/ws-origin.js), reached by libcoap's
// coap-client over UDP through the proxy. The origin reports what it
// got: gatewayd asked for the subprotocol coap at /.well-known/coap
// (§4.1, §4.4), its first message was a CSM with Max-Message-Size (§5.3),
// every message was binary (§4.2), the path came as Uri-Path (§8.3), and
// the origin's Ping was answered with a Pong carrying its token (§5.4),
// and the connection ended with a Close frame when gatewayd stopped.
func TestNodeWSOriginAnswersLibcoapClientThroughProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := testpeer.StartNodeWSOrigin(ctx, t, testpeer.NodeWSOriginSpec{Payload: "from node ws", Ping: true})
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Proxy.MaxMessageSize = 2000
	})
	client, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatalf("coap-client-notls (Debian libcoap3-bin) is needed: %v", err)
	}
	proxy := "coap://" + p.Addrs()[0].String()
	for _, path := range []string{"/sensors/temp", "/other"} {
		target := fmt.Sprintf("coap+ws://127.0.0.1:%d%s", o.Port, path)
		out, err := exec.CommandContext(ctx, client, "-m", "get", "-B", "10", "-P", proxy, target).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "from node ws "+path {
			t.Fatalf("GET %s through %s: %v %q, want the origin's payload", target, proxy, err, out)
		}
	}

	evs := o.Wait(t, 20*time.Second, "the Pong to its Ping", func(evs []testpeer.NodeWSEvent) bool {
		for _, e := range evs {
			if e.Event == "pong" {
				return true
			}
		}
		return false
	})
	var conns, msgs []testpeer.NodeWSEvent
	var paths []string
	for _, e := range evs {
		switch e.Event {
		case "connection":
			conns = append(conns, e)
		case "message":
			msgs = append(msgs, e)
			if e.Code == "0.01" {
				paths = append(paths, uriPath(e))
			}
		}
	}
	if len(conns) != 1 {
		t.Fatalf("%d WebSocket connections to the origin, want one for both requests: %+v", len(conns), conns)
	}
	c := conns[0]
	if c.Path != "/.well-known/coap" || c.Protocols != "coap" || c.Selected != "coap" {
		t.Errorf("the handshake: path %q, Sec-WebSocket-Protocol %q, agreed %q; want /.well-known/coap asking for coap alone (RFC 8323 §4.1)", c.Path, c.Protocols, c.Selected)
	}
	if len(msgs) == 0 || msgs[0].Seq != 0 || msgs[0].Code != "7.01" {
		t.Fatalf("gatewayd's first message is %+v, want a CSM (RFC 8323 §5.3)", msgs)
	}
	if v, ok := optionHex(msgs[0], int(stream.MaxMessageSize)); !ok || v != "07d0" {
		t.Errorf("gatewayd's CSM %s: Max-Message-Size %q (present %v), want 07d0, the max_message_size of 2000", msgs[0].Hex, v, ok)
	}
	for _, m := range msgs {
		if !m.Binary {
			t.Errorf("message %d from gatewayd was a text message: %s (RFC 8323 §4.2 wants binary)", m.Seq, m.Hex)
		}
	}
	if strings.Join(paths, " ") != "sensors/temp other" {
		t.Errorf("the origin got GETs for %q, want sensors/temp then other as Uri-Path", paths)
	}
	// gatewayd closes its origin connections when it stops: with a
	// WebSocket Close frame (RFC 6455 §7.1.2), not a socket that just
	// ends (1006).
	p.Close()
	evs = o.Wait(t, 20*time.Second, "the close", func(evs []testpeer.NodeWSEvent) bool {
		return evs[len(evs)-1].Event == "close"
	})
	if c := evs[len(evs)-1]; c.CloseCode != 1000 {
		t.Errorf("gatewayd's closing reached the origin as code %d %q, want 1000", c.CloseCode, c.Reason)
	}
}

// uriPath joins a received message's Uri-Path options.
func uriPath(e testpeer.NodeWSEvent) string {
	var segs []string
	for _, o := range e.Options {
		if n, _ := o[0].(float64); int(n) == int(coap.URIPath) {
			b, _ := hex.DecodeString(o[1].(string))
			segs = append(segs, string(b))
		}
	}
	return strings.Join(segs, "/")
}

// optionHex is the first value of option n in a received message.
func optionHex(e testpeer.NodeWSEvent, n int) (string, bool) {
	for _, o := range e.Options {
		if m, _ := o[0].(float64); int(m) == n {
			s, _ := o[1].(string)
			return s, true
		}
	}
	return "", false
}
