//go:build !nodemo

package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// coapWSPage is the test's web page: its script speaks CoAP over the
// browser's own WebSocket (RFC 8323 §4), building every byte itself:
// frames of §4.2 (Len 0, TKL, Code, token, options, payload; no Length),
// options as RFC 7252 §3.1 encodes them. coapGet(name, url, proxyUri,
// tokenHex) sends a CSM and a GET with Proxy-Uri, keeps every message that
// arrives, and once a response (not a signal) has come sends Release
// (RFC 8323 §5.5), for gatewayd to close the connection; coapRuns[name]
// is what it saw.
const coapWSPage = `<!doctype html>
<meta charset="utf-8">
<title>CoAP over WebSockets</title>
<script>
"use strict";
window.coapRuns = {};
function hexOf(buf) {
	return Array.from(new Uint8Array(buf), b => b.toString(16).padStart(2, "0")).join("");
}
function bytesOf(hex) {
	const b = [];
	for (let i = 0; i < hex.length; i += 2) b.push(parseInt(hex.substr(i, 2), 16));
	return b;
}
// An option's delta or length: the nibble and its extension bytes.
function ext(n) {
	if (n < 13) return [n, []];
	if (n < 269) return [13, [n - 13]];
	return [14, [(n - 269) >> 8, (n - 269) & 0xff]];
}
// frame builds a message with RFC 8323 §4.2 framing; opts are
// [number, bytes] in ascending order.
function frame(code, token, opts, payload) {
	const out = [token.length, code, ...token];
	let last = 0;
	for (const [num, val] of opts) {
		const [dn, dx] = ext(num - last), [ln, lx] = ext(val.length);
		out.push(dn << 4 | ln, ...dx, ...lx, ...val);
		last = num;
	}
	if (payload && payload.length) out.push(0xff, ...payload);
	return new Uint8Array(out).buffer;
}
window.coapGet = function (name, url, proxyUri, tokenHex) {
	const run = {protocol: "", frames: [], closed: null, error: ""};
	window.coapRuns[name] = run;
	const ws = new WebSocket(url, "coap");
	ws.binaryType = "arraybuffer";
	ws.onopen = () => {
		run.protocol = ws.protocol;
		// CSM (7.01) with Max-Message-Size (2) 1152, then GET (0.01)
		// with Proxy-Uri (35).
		ws.send(frame(0xe1, [], [[2, [0x04, 0x80]]]));
		ws.send(frame(0x01, bytesOf(tokenHex), [[35, Array.from(new TextEncoder().encode(proxyUri))]]));
	};
	ws.onmessage = (e) => {
		const binary = e.data instanceof ArrayBuffer;
		run.frames.push({binary: binary, hex: binary ? hexOf(e.data) : String(e.data)});
		const b = binary ? new Uint8Array(e.data) : [];
		if (b.length >= 2 && (b[1] >> 5) !== 7) ws.send(frame(0xe4, [], []));
	};
	ws.onerror = () => { run.error = "error event"; };
	ws.onclose = (e) => { run.closed = {code: e.code, clean: e.wasClean, reason: e.reason}; };
};
</script>
<p>CoAP over WebSockets</p>
`

// wsRun is what the page saw of one connection.
type wsRun struct {
	Protocol string
	Frames   []struct {
		Binary bool
		Hex    string
	}
	Closed *struct {
		Code   int
		Clean  bool
		Reason string
	}
	Error string
}

// Headless Chromium's own WebSocket, from a page of another origin that
// ws_origins admits, reaches gatewayd's ws:// and wss:// listeners at
// /.well-known/coap and gets a resource of libcoap's coap-server behind
// it. The page builds the CoAP bytes itself; the test reads the bytes it
// received: the subprotocol agreed is coap (RFC 8323 §4.1), gatewayd's
// CSM with Max-Message-Size comes first (§5.3), then the 2.05 with the
// page's token and the origin's payload, each a binary message with Len 0
// (§4.2); after the page's Release (§5.5) gatewayd closes the
// connection with a Close frame, which the browser reports as clean.
func TestBrowserWebSocketGetsResourceThroughGatewayd(t *testing.T) {
	origin := startCoapServer(t)
	pki := testpeer.NewPKI(t)
	stream := freePorts(t, "tcp", 2)
	udp, ws, wss := freePort(t), stream[0], stream[1]
	startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d", "ws://127.0.0.1:%d", "wss://127.0.0.1:%d"]
allow = ["127.0.0.1/32"]
timeout = "10s"
max_message_size = 1500
cert_file = %q
key_file = %q
ws_origins = ["127.0.0.1:*"]
[metrics]
listen = ""
`, udp, ws, wss, pki.File("server.pem"), pki.File("server.key")))

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, coapWSPage)
	}))
	defer page.Close()
	// Chromium trusts the test's server certificate alone, by its public
	// key, for wss://.
	leaf, err := x509.ParseCertificate(pki.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	b := startBrowser(t, "--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(spki[:]))
	tab := b.open(page.URL + "/")
	testutil.EventuallyWithin(t, 30*time.Second, "the test page to load", func() bool {
		var ready bool
		b.eval(tab, `document.readyState === "complete" && typeof coapGet === "function"`, &ready)
		return ready
	})

	target := fmt.Sprintf("coap://127.0.0.1:%d/", origin)
	for i, url := range []string{
		fmt.Sprintf("ws://127.0.0.1:%d/.well-known/coap", ws),
		fmt.Sprintf("wss://127.0.0.1:%d/.well-known/coap", wss),
	} {
		token := []byte{0xb1, 0x0c, byte(i), 0x53}
		var started bool
		b.eval(tab, fmt.Sprintf(`coapGet(%q, %q, %q, %q), true`, url, url, target, hex.EncodeToString(token)), &started)
		var run wsRun
		testutil.EventuallyWithin(t, 30*time.Second, url+": the page's WebSocket to close", func() bool {
			run = wsRun{}
			b.eval(tab, fmt.Sprintf(`coapRuns[%q]`, url), &run)
			return run.Closed != nil
		})
		checkBrowserRun(t, url, run, token)
	}
}

func checkBrowserRun(t *testing.T, url string, run wsRun, token []byte) {
	t.Helper()
	if run.Protocol != "coap" {
		t.Errorf("%s: the browser's WebSocket has subprotocol %q, want coap (RFC 8323 §4.1)", url, run.Protocol)
	}
	if run.Error != "" || run.Closed.Code != 1000 || !run.Closed.Clean {
		t.Errorf("%s: %q, closed %+v; want gatewayd's close after the Release clean, with 1000", url, run.Error, *run.Closed)
	}
	if len(run.Frames) != 2 {
		t.Fatalf("%s: the page got %d messages, want gatewayd's CSM and the response: %+v", url, len(run.Frames), run.Frames)
	}
	var msgs [2]coap.Message
	for i, f := range run.Frames {
		b, err := hex.DecodeString(f.Hex)
		if !f.Binary || err != nil || len(b) < 2 || b[0]>>4 != 0 {
			t.Fatalf("%s: message %d is %q (binary %v), want a binary message with Len 0 (RFC 8323 §4.2)", url, i, f.Hex, f.Binary)
		}
		if err := stream.Decode(&msgs[i], b, true); err != nil {
			t.Fatalf("%s: message %d %s: %v", url, i, f.Hex, err)
		}
	}
	csm, resp := &msgs[0], &msgs[1]
	if csm.Code != stream.CSM {
		t.Errorf("%s: gatewayd's first message is %v (%s), want its CSM (RFC 8323 §5.3)", url, csm.Code, run.Frames[0].Hex)
	} else if v, ok := csm.Options.Get(stream.MaxMessageSize); !ok || coap.DecodeUint(v) != 1500 {
		t.Errorf("%s: gatewayd's CSM %s has Max-Message-Size %x (present %v), want 1500, its max_message_size", url, run.Frames[0].Hex, v, ok)
	}
	const banner = "This is a test server made with libcoap"
	if resp.Code != coap.Content || !bytes.Equal(resp.Token, token) || !strings.HasPrefix(string(resp.Payload), banner) {
		t.Errorf("%s: response %v token %x payload %q, want 2.05 with token %x and libcoap's banner", url, resp.Code, resp.Token, resp.Payload, token)
	}
}
