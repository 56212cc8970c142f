package bridge

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

const hostileName = `<script>alert(1)</script>`

// consoleProxy is a proxy with a sim radio, the broker, a route and a
// plugin that cannot start, its admin endpoint served with the console
// sampled on ticks.
func consoleProxy(t *testing.T, mod func(*Config)) (p *Proxy, admin string, ticks chan time.Time) {
	t.Helper()
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Proxy.Timeout = Duration{10 * time.Second}
	cfg.Route = []RouteConfig{{Name: "origin", Target: "coap://127.0.0.1:9"}}
	cfg.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
	cfg.PubSub.Enabled = true
	cfg.PubSub.StateDir = t.TempDir()
	cfg.Plugin = []plugins.Config{{Name: "gone", Path: filepath.Join(t.TempDir(), "gatewayd-gone"), SHA256: strings.Repeat("ab", 32)}}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ticks = make(chan time.Time)
	p, err := New(context.Background(), cfg, nil, WithVersion("1.2.3+test"), withConsoleTicks(ticks))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	admin, err = p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.Radios()[0].WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	return p, admin, ticks
}

func getStatus(t *testing.T, url string) console.Snapshot {
	t.Helper()
	var s console.Snapshot
	if err := json.Unmarshal([]byte(httpGet(t, url)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// createTopic creates a broker topic named name and returns its
// topic-data path.
func createTopic(t *testing.T, c *coap.Endpoint, p *Proxy, name string) string {
	t.Helper()
	rt := pubsub.RTData
	body, err := (&pubsub.Properties{TopicName: &name, ResourceType: &rt}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	resp := do(t, c, p, &coap.Message{Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: body})
	got, err := pubsub.DecodeProperties(resp.Payload)
	if resp.Code != coap.Created || err != nil || got.TopicData == nil {
		t.Fatalf("create topic: %v %v", resp.Code, err)
	}
	return *got.TopicData
}

// The console's JSON and page show the radio, the nodes it heard with
// their signal, the routes, the observed resources, the broker's topics
// and the plugin that cannot start; a hostile topic name is text, and no
// publication's payload appears anywhere.
func TestConsoleShowsRadiosNodesTopicsObserversAndPlugins(t *testing.T) {
	p, admin, _ := consoleProxy(t, nil)
	n, _ := sim.FromLink(p.Radios()[0].Link())
	c := client(t)
	for i := range n.Nodes() {
		if resp := do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, i, "/sensors/temp"))}); resp.Code != coap.Content {
			t.Fatalf("GET node %d: %v", i, resp.Code)
		}
	}
	data := createTopic(t, c, p, hostileName)
	secret := []byte("PAYLOAD-NEVER-SHOWN-7f3a")
	if resp := do(t, c, p, &coap.Message{Code: coap.PUT, Options: pathOpts(data).SetUint(coap.ContentFormat, 18), Payload: secret}); resp.Code != coap.Created {
		t.Fatalf("publish: %v", resp.Code)
	}
	sub := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, o, err := sub.Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: pathOpts(data)}, func(*coap.Message) {}); err != nil || o == nil {
		t.Fatalf("subscribe: %v", err)
	}

	s := getStatus(t, "http://"+admin+"/api/v1/status")
	if s.APIVersion != 1 || s.Version != "1.2.3+test" || s.UptimeSeconds <= 0 || s.Requests < 5 {
		t.Errorf("api %d, version %q, uptime %v, requests %d", s.APIVersion, s.Version, s.UptimeSeconds, s.Requests)
	}
	if len(s.Radios) != 1 || s.Radios[0].Name != "sim" || s.Radios[0].State != "up" || s.Radios[0].Channel != 11 ||
		s.Radios[0].PANID != 0xface || s.Radios[0].FramesRx == 0 || s.Radios[0].FramesTx == 0 || s.Radios[0].RCPVersion == "" {
		t.Errorf("radios %+v", s.Radios)
	}
	if len(s.Nodes) != len(n.Nodes()) {
		t.Fatalf("%d nodes, want %d: %+v", len(s.Nodes), len(n.Nodes()), s.Nodes)
	}
	for i, node := range s.Nodes {
		if len(node.Addrs) != 1 || node.Addrs[0] != n.Nodes()[i].String() || node.LastHeard == nil || node.RSSI == nil ||
			*node.RSSI >= 0 || *node.RSSI < -110 || node.LQI == nil || node.FramesRx == 0 || node.FramesTx == 0 {
			t.Errorf("node %d: %+v", i, node)
		}
	}
	if len(s.Routes) != 1 || s.Routes[0].Name != "origin" {
		t.Errorf("routes %+v", s.Routes)
	}
	if s.PubSub == nil || len(s.PubSub.TopicList) != 1 || s.PubSub.TopicList[0].Name != hostileName || !s.PubSub.TopicList[0].FullyCreated ||
		s.PubSub.TopicList[0].Subscriptions != 1 {
		t.Errorf("pubsub %+v", s.PubSub)
	}
	if len(s.Observe.Resources) != 1 || s.Observe.Resources[0].Resource != data || s.Observe.Resources[0].Observers != 1 {
		t.Errorf("observed %+v, want %s with one observer", s.Observe.Resources, data)
	}
	if len(s.Plugins) != 1 || s.Plugins[0].State != "down" || s.Plugins[0].RetryAt == nil {
		t.Errorf("plugins %+v", s.Plugins)
	}
	page := httpGet(t, "http://"+admin+"/")
	if strings.Contains(page, hostileName) || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the page does not show the hostile topic name as text")
	}
	for _, mac := range s.Nodes {
		if !strings.Contains(page, mac.MAC) {
			t.Errorf("the page does not list node %s", mac.MAC)
		}
	}
	raw := httpGet(t, "http://"+admin+"/api/v1/status")
	for _, body := range []string{page, raw} {
		for _, enc := range []string{string(secret), base64.StdEncoding.EncodeToString(secret), strings.ToLower(string(secret))} {
			if strings.Contains(body, enc) {
				t.Errorf("a publication's payload is shown")
			}
		}
	}
}

// The sampler fills the history on its ticks: the request rate, and each
// node's RSSI and LQI, plotted on the page.
func TestConsoleSamplesRequestRateAndNodeSignal(t *testing.T) {
	p, admin, ticks := consoleProxy(t, nil)
	n, _ := sim.FromLink(p.Radios()[0].Link())
	c := client(t)
	for range 3 {
		do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 0, "/actuators/valve"))})
	}
	// The sampler's first sample is taken at start; these are two more.
	for range 2 {
		ticks <- time.Now()
	}
	before := p.requestCount()
	do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 1, "/actuators/valve"))})
	// The request is counted when its exchange finishes, which may be
	// just after the client has its answer: sample once it is.
	testutil.Eventually(t, "the request counted", func() bool { return p.requestCount() > before })
	ticks <- time.Now()
	var ser console.Series
	testutil.Eventually(t, "3 request rate points in the history", func() bool {
		ser = console.Series{}
		if err := json.Unmarshal([]byte(httpGet(t, "http://"+admin+"/api/v1/history")), &ser); err != nil {
			t.Fatal(err)
		}
		return len(ser.RequestRate) == 3
	})
	if ser.RequestRate[2].Value <= 0 {
		t.Errorf("no request rate after a request: %+v", ser.RequestRate)
	}
	if len(ser.Nodes) != 2 || len(ser.Nodes[0].RSSI) == 0 || len(ser.Nodes[0].LQI) == 0 || len(ser.Nodes[0].HeardAge) == 0 {
		t.Errorf("node series %+v", ser.Nodes)
	}
	page := httpGet(t, "http://"+admin+"/")
	if strings.Count(page, "<polyline points=") < 1+2*3 {
		t.Errorf("the page draws %d lines, want the rate and three per heard node", strings.Count(page, "<polyline points="))
	}
}

func writeToken(t *testing.T, tok string, mode os.FileMode) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(f, []byte(tok+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(f, mode)
	return f
}

func statusWith(t *testing.T, url, auth string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// With token_file every path of the admin endpoint wants the token:
// the metrics, /status and the console alike.
func TestAdminTokenGuardsEveryPath(t *testing.T) {
	const tok = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OQ"
	f := writeToken(t, tok, 0o600)
	_, admin, _ := consoleProxy(t, func(c *Config) { c.Metrics.TokenFile = f })
	for _, path := range []string{"/metrics", "/status", "/", "/console.js", "/api/v1/", "/api/v1/status", "/api/v1/history", "/api/v1/events", "/console/events"} {
		if got := statusWith(t, "http://"+admin+path, ""); got != http.StatusUnauthorized {
			t.Errorf("%s without the token: %d", path, got)
		}
		if got := statusWith(t, "http://"+admin+path, "Bearer "+tok+"x"); got != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", path, got)
		}
		if strings.HasSuffix(path, "events") {
			continue // streams; served, as the page test shows
		}
		if got := statusWith(t, "http://"+admin+path, "Bearer "+tok); got != http.StatusOK {
			t.Errorf("%s with the token: %d", path, got)
		}
	}
	// With a token the console may be reached by name: the token, not the
	// Host header, keeps other sites' pages out.
	req, _ := http.NewRequest("GET", "http://"+admin+"/api/v1/status", nil)
	req.Host = "gateway.example:9683"
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("by name with the token: %d", resp.StatusCode)
	}
}

// A token file others may read keeps the admin endpoint closed rather
// than open without it; without a token the console answers only by
// address.
func TestAdminEndpointStaysClosedOnABadTokenFileAndRefusesNamesWithoutOne(t *testing.T) {
	p := startProxy(t, func(c *Config) { c.Metrics.TokenFile = writeToken(t, "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OQ", 0o644) })
	if addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "lets others use it") {
		t.Errorf("ServeAdmin with a world-readable token file: %q, %v", addr, err)
	}
	_, admin, _ := consoleProxy(t, nil)
	req, _ := http.NewRequest("GET", "http://"+admin+"/api/v1/status", nil)
	req.Host = "rebound.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("by a DNS name without a token: %d", resp.StatusCode)
	}
	if got := statusWith(t, "http://"+admin+"/metrics", ""); got != http.StatusOK {
		t.Errorf("/metrics by address without a token: %d", got)
	}
}

// console = false serves no page, and the metrics as before.
func TestConsoleOff(t *testing.T) {
	_, admin, _ := consoleProxy(t, func(c *Config) { c.Metrics.Console = false })
	for path, want := range map[string]int{"/": http.StatusNotFound, "/api/v1/status": http.StatusNotFound, "/metrics": http.StatusOK, "/status": http.StatusOK} {
		if got := statusWith(t, "http://"+admin+path, ""); got != want {
			t.Errorf("%s: %d, want %d", path, got, want)
		}
	}
}

// Closing the proxy ends the console's event streams and its sampler,
// and does not wait out the server's shutdown grace for them.
func TestCloseEndsConsoleStreamsAndSampler(t *testing.T) {
	p, admin, _ := consoleProxy(t, nil)
	resp, err := http.Get("http://" + admin + "/console/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("stream: %q %v", line, err)
	}
	if s := httpGet(t, "http://"+admin+"/metrics"); !strings.Contains(s, "gatewayd_console_streams 1") {
		t.Error("gatewayd_console_streams does not count the open stream")
	}
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= 2*time.Second {
		t.Errorf("Close took %v: it waited out the shutdown grace for the stream", d)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, br); ended <- err }()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("stream after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		resp.Body.Close()
		t.Error("the event stream did not end with Close")
	}
	select {
	case <-p.console.done:
	default:
		t.Error("the sampler runs on after Close")
	}
	if n := p.console.srv.Streams(); n != 0 {
		t.Errorf("%d streams after Close", n)
	}
}

// A node is named by any of its addresses; others stay unnamed.
func TestNodesAreNamedByAddress(t *testing.T) {
	nodes := []console.Node{{Addrs: []string{"fd00::1"}}, {Addrs: []string{"fd00::2", "fd00:1::2"}}, {Addrs: []string{}}}
	nameNodes(nodes, map[netip.Addr]string{netip.MustParseAddr("fd00:1::2"): hostileName, netip.MustParseAddr("fd00::9"): "other"})
	if nodes[0].Name != "" || nodes[1].Name != hostileName || nodes[2].Name != "" {
		t.Errorf("names %q %q %q", nodes[0].Name, nodes[1].Name, nodes[2].Name)
	}
}
