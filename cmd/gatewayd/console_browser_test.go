//go:build !nodemo

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// browser is headless Chromium (Debian package chromium) driven over
// the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
// messages ended by a NUL byte, fd 3 in, fd 4 out), so that the test
// waits on what the page does rather than on a fixed time.
type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   *os.File // its fd 3
	out  *bufio.Reader
	id   int
	done chan error
}

// flags are added to Chromium's command line.
func startBrowser(t *testing.T, flags ...string) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: run `make deps` (Debian package chromium)")
	}
	toR, toW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromR, fromW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// As root (CI) Chromium's sandbox cannot start; the page is ours.
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--window-size=1500,1800", "--remote-debugging-pipe"}, flags...)
	cmd := exec.Command(bin, append(args, "about:blank")...)
	cmd.ExtraFiles = []*os.File{toR, fromW}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toR.Close()
	fromW.Close()
	b := &browser{t: t, cmd: cmd, in: toW, out: bufio.NewReader(fromR), done: make(chan error, 1)}
	go func() { b.done <- cmd.Wait() }()
	t.Cleanup(func() {
		b.in.Close() // Chromium exits when its pipe closes
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-b.done
		}
		fromR.Close()
		if t.Failed() {
			t.Logf("chromium's stderr:\n%s", lastOf(stderr.String(), 4000))
		}
	})
	return b
}

func lastOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// call sends one command and returns its result, skipping the events
// that come before it.
func (b *browser) call(session, method string, params any) json.RawMessage {
	b.t.Helper()
	b.id++
	msg := map[string]any{"id": b.id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	req, _ := json.Marshal(msg)
	if _, err := b.in.Write(append(req, 0)); err != nil {
		b.t.Fatalf("chromium %s: %v", method, err)
	}
	for {
		line, err := b.out.ReadBytes(0)
		if err != nil {
			b.t.Fatalf("chromium %s: %v", method, err)
		}
		var resp struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line[:len(line)-1], &resp); err != nil {
			b.t.Fatalf("chromium %s: %v", method, err)
		}
		if resp.ID != b.id {
			continue
		}
		if resp.Error != nil {
			b.t.Fatalf("chromium %s: %s", method, resp.Error.Message)
		}
		return resp.Result
	}
}

// eval evaluates a script expression in the page and decodes its value
// into v.
func (b *browser) eval(session, expr string, v any) {
	b.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(b.call(session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &r); err != nil {
		b.t.Fatal(err)
	}
	if r.Exception != nil {
		b.t.Fatalf("%s: %s", expr, r.Exception.Text)
	}
	if err := json.Unmarshal(r.Result.Value, v); err != nil {
		b.t.Fatalf("%s: %s: %v", expr, r.Result.Value, err)
	}
}

// open opens url in a new tab and returns the session to drive it.
func (b *browser) open(url string) string {
	b.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	json.Unmarshal(b.call("", "Target.createTarget", map[string]any{"url": url}), &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}), &attached)
	if attached.SessionID == "" {
		b.t.Fatal("chromium: no session")
	}
	return attached.SessionID
}

// Headless Chromium loads the console of a running gatewayd with the
// simulated radio: the rendered page lists the three nodes the gateway
// heard, draws their plots, takes a live update over the event stream,
// and shows a node and a topic named <script>alert(1)</script> as text. The
// screenshot is kept in the test's artifacts (go test -artifacts).
func TestBrowserShowsNodesPlotsAndHostileNamesAsText(t *testing.T) {
	coapPort := freePort(t)
	g := startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
timeout = "10s"

[[radio]]
name = "sim"
driver = "sim"

[pubsub]
enabled = true
state_dir = %q

[rd]
enabled = true
state_dir = %q

[metrics]
listen = "127.0.0.1:0"
`, coapPort, t.TempDir(), t.TempDir()))
	proxy := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(coapPort))
	admin := "http://" + g.adminAddr(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _ := endpoint(t, ctx, nil)
	// The gateway hears each node once it has sent it a request; over
	// the radio a request may meet the radio coming up (5.03) or a lost
	// frame (5.04), and is tried again.
	for i := range sim.DefaultNodes {
		uri := fmt.Sprintf("coap://[%v]/sensors/temp", sim.NodeAddr(sim.DefaultPrefix, i))
		var last string
		dl, _ := ctx.Deadline()
		testutil.EventuallyWithin(t, time.Until(dl), "a 2.05 to GET "+uri, func() bool {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := c.Do(rctx, proxy, &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyURI, []byte(uri))})
			rcancel()
			if err == nil && resp.Code == coap.Content {
				return true
			}
			if last = fmt.Sprint(resp, err); ctx.Err() != nil {
				t.Fatalf("GET %s: %s", uri, last)
			}
			return false
		})
	}
	const hostile = `<script>alert(1)</script>`
	name, rt := hostile, pubsub.RTData
	body, err := (&pubsub.Properties{TopicName: &name, ResourceType: &rt}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ctx, proxy, &coap.Message{Code: coap.POST, Options: pathOptions("ps").SetUint(coap.ContentFormat, 65001), Payload: body})
	if err != nil || resp.Code != coap.Created {
		t.Fatalf("create the hostile topic: %v %v", resp, err)
	}
	// A node's name is whatever it registered with the resource
	// directory (RFC 9176 §5 allows any UTF-8 without controls): here the
	// first node's, registered from loopback with the node as its base.
	reg := &coap.Message{Code: coap.POST, Payload: []byte("</sensors/temp>"),
		Options: pathOptions("rd").SetUint(coap.ContentFormat, 40).
			Insert(coap.URIQuery, []byte("ep="+hostile)).
			Insert(coap.URIQuery, []byte(fmt.Sprintf("base=coap://[%v]", sim.NodeAddr(sim.DefaultPrefix, 0))))}
	if resp, err := c.Do(ctx, proxy, reg); err != nil || resp.Code != coap.Created {
		t.Fatalf("register the node under a hostile name: %v %v", resp, err)
	}
	var snap console.Snapshot
	hr, err := http.Get(admin + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(hr.Body).Decode(&snap)
	hr.Body.Close()
	if err != nil || len(snap.Nodes) != sim.DefaultNodes || snap.PubSub == nil || len(snap.PubSub.TopicList) != 1 {
		t.Fatalf("the API before the browser: %v %+v", err, snap)
	}

	// The plots are drawn from the history, sampled every 15 s: wait for
	// a sample with each node in it.
	var ser console.Series
	testutil.EventuallyWithin(t, 60*time.Second, "a history sample of the three nodes' signal", func() bool {
		ser = console.Series{}
		hr, err := http.Get(admin + "/api/v1/history")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(hr.Body).Decode(&ser)
		hr.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		heard := 0
		for _, n := range ser.Nodes {
			if len(n.RSSI) > 0 {
				heard++
			}
		}
		return heard == sim.DefaultNodes
	})
	b := startBrowser(t)
	page := b.open(admin + "/")
	// The page swaps in a fragment from its event stream at once, and
	// another every 5 s: wait for the second, a live update.
	var updates int
	testutil.EventuallyWithin(t, 60*time.Second, "the page to take 2 live updates over its event stream", func() bool {
		b.eval(page, `document.readyState === "complete" ? Number(document.body.getAttribute("data-updates")) : 0`, &updates)
		return updates >= 2
	})
	var dom string
	b.eval(page, "document.documentElement.outerHTML", &dom)
	var facts struct {
		Nodes, Lines, Scripts int
		TopicName, Live       string
		NodeNames             []string
	}
	b.eval(page, `({
		Nodes: document.querySelectorAll("tr.node").length,
		Lines: document.querySelectorAll("#nodes svg.plot polyline").length,
		Scripts: document.querySelectorAll("script").length,
		TopicName: document.querySelector("tr.topic td.name").textContent,
		Live: document.getElementById("live").textContent,
		NodeNames: Array.from(document.querySelectorAll("tr.node td.name"), e => e.textContent),
	})`, &facts)
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	json.Unmarshal(b.call(page, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}), &shot)
	png := shot.Data
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "console.png"), png, 0o644); err != nil {
		t.Error(err)
	}
	if facts.Nodes != sim.DefaultNodes {
		t.Errorf("the rendered page lists %d nodes, want %d", facts.Nodes, sim.DefaultNodes)
	}
	if facts.Lines < sim.DefaultNodes {
		t.Errorf("%d lines drawn in the nodes' plots, want at least one per node", facts.Lines)
	}
	if facts.TopicName != hostile || facts.Scripts != 1 {
		t.Errorf("the hostile topic name renders as %q with %d script elements, want it as text beside the page's one script", facts.TopicName, facts.Scripts)
	}
	if !slices.Contains(facts.NodeNames, hostile) {
		t.Errorf("the node registered as %q is named %q on the page, want the name as text", hostile, facts.NodeNames)
	}
	if n := strings.Count(dom, `<td class="name">&lt;script&gt;alert(1)&lt;/script&gt;</td>`); n != 2 {
		t.Errorf("the hostile node and topic names are shown as text %d times, want 2", n)
	}
	if facts.Live != "live" {
		t.Errorf("the page says %q, not live", facts.Live)
	}
	rows := regexp.MustCompile(`<tr class="node">`).FindAllStringIndex(dom, -1)
	if len(rows) != sim.DefaultNodes {
		t.Errorf("the rendered page lists %d nodes, want %d", len(rows), sim.DefaultNodes)
	}
	for _, n := range snap.Nodes {
		if !strings.Contains(dom, "<td>"+n.MAC+"</td>") || !strings.Contains(dom, n.Addrs[0]) {
			t.Errorf("node %s %v is not in the rendered page", n.MAC, n.Addrs)
		}
		rssi := regexp.MustCompile(`aria-label="RSSI of ` + regexp.QuoteMeta(n.MAC) + `" data-points="([1-9][0-9]*)"><title>[^<]*</title><line[^>]*></line><polyline points="[0-9., ]+"`)
		if !rssi.MatchString(dom) {
			t.Errorf("no RSSI line drawn for node %s", n.MAC)
		}
	}
	if strings.Contains(dom, "<script>alert") {
		t.Error("a hostile name became a script element")
	}
	if !strings.Contains(dom, `<td class="name">&lt;script&gt;alert(1)&lt;/script&gt;</td>`) {
		t.Error("the hostile topic name is not shown as text")
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Errorf("screenshot: %d bytes", len(png))
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}
}
