package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

const hostile = `<script>alert(1)</script>`

// fixture is a snapshot with every string a node, a client or a
// configuration file can set made hostile.
func fixture(now time.Time) Snapshot {
	rssi, lqi, cf := -67, 200, 0
	heard := now.Add(-3 * time.Second)
	return Snapshot{
		APIVersion: APIVersion, Version: "1.0.0", GoVersion: "go1.26", Started: now.Add(-time.Hour), Now: now, UptimeSeconds: 3600,
		Listeners: []Listener{{Listen: "udp://127.0.0.1:5683", Addr: "127.0.0.1:5683"}},
		Radios:    []Radio{{Name: "sim", Driver: "sim", State: "up", Channel: 11, PANID: 0xface, Prefix: "fd00::/64", RCPVersion: hostile, LastError: hostile}},
		Nodes: []Node{{Radio: "sim", MAC: "02:00:00:00:00:00:00:01", Addrs: []string{"fd00::1"}, Name: hostile,
			LastHeard: &heard, RSSI: &rssi, LQI: &lqi, FramesRx: 5, FramesTx: 4}},
		Routes:  []Route{{Name: "node1", Target: "coap://[fd00::1]/" + hostile}},
		Observe: Observe{Resources: []Observed{{Resource: "/" + hostile, Observers: 2}}},
		PubSub:  &PubSub{Topics: 1, TopicList: []Topic{{Name: hostile, Path: "/ps/a", DataPath: "/ps/data/b", ContentFormat: &cf}}},
		Plugins: []Plugin{{Name: "http", Path: "/usr/lib/x", State: "down", LastError: hostile}},
		Errors:  []LogEntry{{Time: now, Level: "ERROR", Message: hostile, Attrs: "peer=" + hostile}},
	}
}

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.History == nil {
		cfg.History = NewHistory(0, 0)
	}
	if cfg.Snapshot == nil {
		cfg.Snapshot = func() Snapshot { return fixture(time.Now()) }
	}
	s := New(cfg)
	mux := http.NewServeMux()
	s.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() { s.Close(); ts.Close() })
	return s, ts
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// A node name, a topic name, a route, a log line: whatever reaches the
// page is text in it, never markup, in the page, its live fragments and
// the JSON.
func TestHostileStringsAreTextInThePageStreamAndJSON(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	code, page, hdr := get(t, ts.URL+"/")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", code, hdr.Get("Content-Type"))
	}
	frag := firstEvent(t, ts.URL+"/console/events")
	_, js, _ := get(t, ts.URL+"/api/v1/status")
	for name, body := range map[string]string{"page": page, "event": frag, "json": js} {
		if strings.Contains(body, "<script>alert") {
			t.Errorf("%s carries the hostile string as markup", name)
		}
	}
	const escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
	for _, body := range []string{page, frag} {
		// node name, topic name, route, RCP version, radio error, plugin
		// error, resource, log message and attributes.
		if n := strings.Count(body, escaped); n < 9 {
			t.Errorf("the hostile string is shown escaped %d times, want 9 or more", n)
		}
	}
	var snap Snapshot
	if err := json.Unmarshal([]byte(js), &snap); err != nil || snap.Nodes[0].Name != hostile {
		t.Errorf("JSON does not carry the name intact: %v %+v", err, snap.Nodes)
	}
	// Without scripts the page is whole, and reloads itself.
	if !strings.Contains(page, `<noscript><meta http-equiv="refresh" content="5"></noscript>`) || !strings.Contains(page, `<main id="main">`) ||
		!strings.Contains(page, "02:00:00:00:00:00:00:01") {
		t.Error("the page is not whole without scripts, or does not refresh itself")
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

// firstEvent reads the first event of a stream and returns its data.
func firstEvent(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ev, err := readEvent(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	return ev.data
}

type event struct{ name, data string }

// readEvent parses one event as a browser does (HTML Living Standard,
// 9.2.6): fields to a blank line, data lines joined by "\n".
func readEvent(r *bufio.Reader) (event, error) {
	var ev event
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if data == nil && ev.name == "" {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "data":
			data = append(data, value)
		}
	}
}

// A string with line breaks cannot end an event early or start one of
// its own: each line is a data field of the same event.
func TestEventDataCannotInjectFields(t *testing.T) {
	var b strings.Builder
	writeEvent(&b, "main", "a\n\nevent: evil\r\ndata: x\rz")
	r := bufio.NewReader(strings.NewReader(b.String()))
	ev, err := readEvent(r)
	if err != nil {
		t.Fatal(err)
	}
	if ev.name != "main" || ev.data != "a\n\nevent: evil\ndata: xz" {
		t.Errorf("event %q data %q", ev.name, ev.data)
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Errorf("after the event: %q", rest)
	}
}

// Each node gets its RSSI, LQI and last-heard plots, and the page the
// request rate, drawn from the history.
func TestPagePlotsRequestRateAndEachNodesSignal(t *testing.T) {
	h := NewHistory(time.Hour, 10*time.Second)
	now := time.Now()
	key := NodeKey("sim", "02:00:00:00:00:00:00:01")
	for i := 10; i >= 0; i-- {
		at := now.Add(-time.Duration(i) * time.Minute)
		r, l := -60-i, 100+i
		h.Add(Sample{Time: at, Requests: uint64(1000 - 50*i), Nodes: []NodeSample{{Key: key, LastHeard: at.Add(-time.Second), RSSI: &r, LQI: &l}}})
	}
	_, ts := newTestServer(t, Config{History: h, Snapshot: func() Snapshot { return fixture(now) }})
	_, page, _ := get(t, ts.URL+"/")
	for _, label := range []string{`aria-label="requests per second" data-points="10"`,
		`aria-label="RSSI of 02:00:00:00:00:00:00:01" data-points="12"`,
		`aria-label="LQI of 02:00:00:00:00:00:00:01" data-points="12"`,
		`aria-label="seconds since last heard, 02:00:00:00:00:00:00:01" data-points="12"`} {
		i := strings.Index(page, label)
		if i < 0 {
			t.Errorf("no plot %s", label)
			continue
		}
		if svg := page[i:]; !strings.Contains(svg[:strings.Index(svg, "</svg>")], "<polyline points=") {
			t.Errorf("plot %s has no line", label)
		}
	}
	_, js, _ := get(t, ts.URL+"/api/v1/history")
	var ser Series
	if err := json.Unmarshal([]byte(js), &ser); err != nil {
		t.Fatal(err)
	}
	if len(ser.RequestRate) != 10 || ser.RequestRate[9].Value < 0.8 || ser.RequestRate[9].Value > 0.9 {
		t.Errorf("request rate %+v, want 10 points ending at 50/60 s", ser.RequestRate)
	}
	if len(ser.Nodes) != 1 || len(ser.Nodes[0].RSSI) != 11 || ser.Nodes[0].RSSI[10].Value != -60 {
		t.Errorf("nodes %+v", ser.Nodes)
	}
}

// An event stream ends when its client goes and when the server closes,
// and no more than MaxStreams are open at once.
func TestEventStreamsEndWithTheirClientAndOnCloseAndAreBounded(t *testing.T) {
	s, ts := newTestServer(t, Config{MaxStreams: 2, Push: time.Hour})
	open := func(ctx context.Context) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	r1 := open(ctx1)
	ev, err := readEvent(bufio.NewReader(r1.Body))
	if err != nil || ev.name != "status" || !strings.Contains(ev.data, `"api_version":1`) {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	r2 := open(context.Background())
	defer r2.Body.Close()
	if r2.StatusCode != http.StatusOK {
		t.Fatalf("second stream: %d", r2.StatusCode)
	}
	waitFor(t, func() bool { return s.Streams() == 2 }, "two streams")
	r3 := open(context.Background())
	r3.Body.Close()
	if r3.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a third stream over MaxStreams 2: %d", r3.StatusCode)
	}
	cancel1()
	r1.Body.Close()
	waitFor(t, func() bool { return s.Streams() == 1 }, "the first stream to end with its client")

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	if _, err := io.ReadAll(r2.Body); err != nil {
		t.Errorf("the stream after Close: %v", err)
	}
	<-closed
	if n := s.Streams(); n != 0 {
		t.Errorf("%d streams after Close", n)
	}
	r4 := open(context.Background())
	r4.Body.Close()
	if r4.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream after Close: %d", r4.StatusCode)
	}
}

// Streams open at once share one rendering: their cost does not grow
// with how many watch.
func TestStreamsShareOneRendering(t *testing.T) {
	var calls atomic.Int64
	_, ts := newTestServer(t, Config{Push: time.Hour, Snapshot: func() Snapshot { calls.Add(1); return fixture(time.Now()) }})
	for range 3 {
		firstEvent(t, ts.URL+"/api/v1/events")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("3 streams took %d snapshots, want 1", n)
	}
	for range 3 {
		firstEvent(t, ts.URL+"/console/events")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("3 page streams took %d more snapshots, want 1", n-1)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

// Without a token, a request naming the console by a DNS name (a page
// whose name was rebound to the gateway's address) is refused; by address
// or as localhost it is served.
func TestWithoutTokenOnlyAddressHostsAreServed(t *testing.T) {
	_, ts := newTestServer(t, Config{AddressHostOnly: true})
	for host, want := range map[string]int{"attacker.example": http.StatusMisdirectedRequest, "attacker.example:80": http.StatusMisdirectedRequest,
		"127.0.0.1:9683": http.StatusOK, "[::1]:9683": http.StatusOK, "localhost:9683": http.StatusOK, "192.0.2.1": http.StatusOK} {
		for _, path := range []string{"/", "/api/v1/status"} {
			req, _ := http.NewRequest("GET", ts.URL+path, nil)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("Host %s %s: %d, want %d", host, path, resp.StatusCode, want)
			}
		}
	}
}

// With a token, a request gets through only with it: as a bearer token
// or as a browser's Basic password.
func TestAuthorizeWantsTheToken(t *testing.T) {
	const tok = "s3cr3t-t0ken-0123456789"
	h := Authorize(func() string { return tok }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ts := httptest.NewServer(h)
	defer ts.Close()
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong bearer", "Bearer s3cr3t-t0ken-0123456780", http.StatusUnauthorized},
		{"prefix of it", "Bearer s3cr3t-t0ken", http.StatusUnauthorized},
		{"bearer", "Bearer " + tok, http.StatusOK},
		{"bearer lower case", "bearer " + tok, http.StatusOK},
		{"basic", "Basic " + b64("operator:"+tok), http.StatusOK},
		{"basic wrong", "Basic " + b64(tok+":x"), http.StatusUnauthorized},
		{"basic junk", "Basic !!!", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest("GET", ts.URL, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		if resp.StatusCode == http.StatusUnauthorized && len(resp.Header.Values("WWW-Authenticate")) != 2 {
			t.Errorf("%s: challenges %q", tc.name, resp.Header.Values("WWW-Authenticate"))
		}
	}
}

func b64(s string) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b strings.Builder
	for i := 0; i < len(s); i += 3 {
		var n uint32
		k := min(3, len(s)-i)
		for j := 0; j < 3; j++ {
			n <<= 8
			if j < k {
				n |= uint32(s[i+j])
			}
		}
		for j := 0; j < 4; j++ {
			if j <= k {
				b.WriteByte(enc[n>>(18-6*j)&63])
			} else {
				b.WriteByte('=')
			}
		}
	}
	return b.String()
}

// A token file others can read, a short token, or one with characters
// outside RFC 6750's b64token is refused.
func TestReadTokenRefusesWeakFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "AbCdEfGh0123456789-._~+/=="
	if tok, err := ReadToken(write("good", "  "+good+"\n", 0o600)); err != nil || tok != good {
		t.Errorf("good file: %q, %v", tok, err)
	}
	if _, err := ReadToken(write("group", good, 0o640)); err != nil {
		t.Errorf("0640: %v", err)
	}
	for name, tc := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"world-readable": {good, 0o644, "lets others use it"},
		"short":          {"0123456789", 0o600, "at least 16"},
		"space inside":   {"0123456789 abcdefgh", 0o600, "want letters"},
		"quote":          {`0123456789"abcdefgh`, 0o600, "want letters"},
		"padding only":   {strings.Repeat("=", 20), 0o600, "only padding"},
		"too large":      {strings.Repeat("a", 5000), 0o600, "larger than"},
	} {
		_, err := ReadToken(write(name, tc.body, tc.mode))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "console: token file") {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if _, err := ReadToken(dir); err == nil {
		t.Error("a directory was taken as a token file")
	}
}

// The history keeps an hour whatever the uptime, and at most
// MaxPlotNodes nodes whatever the frames invent.
func TestHistoryIsBounded(t *testing.T) {
	h := NewHistory(time.Hour, 15*time.Second)
	start := time.Now()
	for i := range 2000 { // over 8 hours
		at := start.Add(time.Duration(i) * 15 * time.Second)
		r := -50
		nodes := []NodeSample{{Key: "sim/steady", LastHeard: at, RSSI: &r}}
		for j := range 5 {
			nodes = append(nodes, NodeSample{Key: fmt.Sprintf("sim/forged-%d-%d", i, j), LastHeard: at, RSSI: &r})
		}
		h.Add(Sample{Time: at, Requests: uint64(i), Nodes: nodes})
	}
	s := h.Series()
	if n := len(s.RequestRate); n != 241 {
		t.Errorf("%d rate points, want 241 (an hour of 15 s and the newest)", n)
	}
	if len(s.Nodes) > MaxPlotNodes {
		t.Errorf("%d nodes kept, want at most %d", len(s.Nodes), MaxPlotNodes)
	}
	var steady *NodeHistory
	for i := range s.Nodes {
		if s.Nodes[i].Key == "sim/steady" {
			steady = &s.Nodes[i]
		}
	}
	if steady == nil || len(steady.RSSI) != 241 {
		t.Errorf("the node in every sample: %v", steady)
	}
	for _, p := range s.RequestRate {
		if p.Value < 0.066 || p.Value > 0.067 {
			t.Fatalf("rate %v, want 1/15", p.Value)
		}
	}
}
