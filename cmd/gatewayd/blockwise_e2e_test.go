package main

// Representations and bodies larger than one CoAP block (RFC 7959) through
// the plugins: a real gatewayd (in process) with its real plugin
// processes, libcoap's coap-server as the origin (its /example_data is
// served in 1024-byte Block2 blocks with ETag and Size2, takes PUT bodies
// in Block1 blocks, and notifies its observers with block 0), curl,
// mosquitto and a paho subscriber.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// bigBody is n random bytes: no run of them can pass for another part.
func bigBody(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%d bytes sha256 %x", len(b), h[:8])
}

// putOrigin sets the origin's resource to body directly, with libcoap's
// own client (which sends it in Block1 blocks), and checks that it took
// it whole.
func putOrigin(t *testing.T, uri string, body []byte) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(in, body, 0o600); err != nil {
		t.Fatal(err)
	}
	coapClient(t, "coap-client-notls", "-m", "put", "-f", in, uri)
	if got := getOrigin(t, uri); !bytes.Equal(got, body) {
		t.Fatalf("origin has %s after PUT of %s", digest(got), digest(body))
	}
}

// getOrigin fetches uri directly with libcoap's client.
func getOrigin(t *testing.T, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "got")
	coapClient(t, "coap-client-notls", "-o", out, uri)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metric finds the plugin's counter gatewayd_plugin_<counter>_total in a
// scrape; -1 when absent.
func metric(scraped, plugin, counter string) int {
	re := regexp.MustCompile(`gatewayd_plugin_` + counter + `_total\{plugin="` + regexp.QuoteMeta(plugin) + `"\} ([0-9]+)`)
	m := re.FindStringSubmatch(scraped)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// waitLog waits for a line of log that matches every pattern.
func waitLog(t *testing.T, log *syncBuffer, d time.Duration, patterns ...string) string {
	t.Helper()
	var line string
	log.waitUntil(t, d, fmt.Sprintf("log line with %q", patterns), nil, func(b []byte) bool {
	lines:
		for _, l := range strings.Split(string(b), "\n") {
			for _, p := range patterns {
				if !strings.Contains(l, p) {
					continue lines
				}
			}
			line = l
			return true
		}
		return false
	})
	return line
}

// startHTTPGateway starts libcoap's coap-server with body as its
// /example_data, and gatewayd with the HTTP plugin (bin, sum) whose
// [[plugin]] table adds extra; it returns the origin's URI, the front
// end's /hc/ URI for it, the admin address and gatewayd's log.
func startHTTPGateway(t *testing.T, body []byte, extra string) (origin, hc, admin string, log *syncBuffer) {
	t.Helper()
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	origin = fmt.Sprintf("coap://127.0.0.1:%d/example_data", startCoapServer(t))
	putOrigin(t, origin, body)
	proxy, httpPort := freePort(t), freeTCPPort(t)
	g := startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
timeout = "5s"

[metrics]
listen = "127.0.0.1:0"

[[plugin]]
name = "http"
path = %q
sha256 = %q
%s
[plugin.config]
listen = "127.0.0.1:%d"
`, proxy, bin, sum, extra, httpPort), debugLog())
	log = g.log
	hc = fmt.Sprintf("http://127.0.0.1:%d/hc/%s", httpPort, origin)
	// The front end may need a moment after gatewayd reports it started.
	until(t, 10*time.Second, "the HTTP front end", func() error {
		return exec.Command(tool(t, "curl"), "-sS", "--max-time", "5", "-o", "/dev/null", strings.TrimSuffix(hc, "example_data")).Run()
	})
	return origin, hc, g.adminAddr(t), log
}

// The HTTP plugin as an HC proxy (RFC 8075 §8.3) uses block-wise transfers
// both ways: curl's GET of a 10 KiB resource comes back whole (Block2),
// not its first 1024 bytes, and curl's 10 KiB PUT reaches libcoap whole
// (Block1).
func TestHTTPPluginMovesLargeBodiesWholeBothWays(t *testing.T) {
	body := bigBody(t, 10240)
	origin, hc, admin, log := startHTTPGateway(t, body, "")
	// GET, twice: the second time the blocks may come from gatewayd's
	// cache.
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "got")
		status := curl(t, "-o", out, "-w", "%{http_code}", hc)
		got, _ := os.ReadFile(out)
		if status != "200" || !bytes.Equal(got, body) {
			t.Fatalf("GET %d through /hc/: HTTP %s, %s; want %s\n%s", i+1, status, digest(got), digest(body), warnings(log.String()))
		}
	}
	// PUT: 10 KiB from curl, in Block1 blocks to the origin.
	other := bigBody(t, 10240)
	in := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(in, other, 0o600); err != nil {
		t.Fatal(err)
	}
	status := curl(t, "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@"+in, "-o", "/dev/null", "-w", "%{http_code}", hc)
	if status != "201" && status != "204" {
		t.Fatalf("PUT of 10 KiB: HTTP %s\n%s", status, warnings(log.String()))
	}
	if got := getOrigin(t, origin); !bytes.Equal(got, other) {
		t.Fatalf("the origin has %s, want the %s curl sent", digest(got), digest(other))
	}
	m := scrape(t, admin)
	if n := metric(m, "http", "blockwise_transfers"); n < 3 {
		t.Errorf("blockwise counter %d, want both GETs and the PUT\n%s", n, grepLines(m, "gatewayd_plugin_blockwise_transfers_total"))
	}
}

// Over the plugin's max_body the HTTP plugin answers a clear error and
// never a part: the GET of a 10 KiB resource is 502 (gatewayd could not
// get a response it can pass on, RFC 7252 §10.2), the PUT of a 10 KiB
// body 413 and the origin keeps what it had; each with a log line naming
// the URI and the size, and counted in the metrics.
func TestHTTPPluginRefusesBodiesOverMaxBodyWhole(t *testing.T) {
	body := bigBody(t, 10240)
	origin, hc, admin, log := startHTTPGateway(t, body, "max_body = 4096")
	out := filepath.Join(t.TempDir(), "small")
	status := curl(t, "-o", out, "-w", "%{http_code}", hc)
	msg, _ := os.ReadFile(out)
	if status != "502" || !strings.Contains(string(msg), "representation of 10240 bytes over the gateway's max_body of 4096") {
		t.Fatalf("GET over max_body: HTTP %s %q, want 502 naming both sizes", status, msg)
	}
	waitLog(t, log, 5*time.Second, "representation over max_body", "plugin=http", "uri="+origin, "size=10240", "max_body=4096")

	in := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(in, bigBody(t, 10240), 0o600); err != nil {
		t.Fatal(err)
	}
	status = curl(t, "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@"+in, "-o", out, "-w", "%{http_code}", hc)
	msg, _ = os.ReadFile(out)
	if status != "413" || !strings.Contains(string(msg), "request body of 10240 bytes over the gateway's max_body of 4096") {
		t.Fatalf("PUT over max_body: HTTP %s %q, want 413", status, msg)
	}
	waitLog(t, log, 5*time.Second, "request body over max_body", "plugin=http", "uri="+origin, "size=10240")
	if got := getOrigin(t, origin); !bytes.Equal(got, body) {
		t.Fatalf("after a refused PUT the origin has %s, want the earlier %s", digest(got), digest(body))
	}
	if n := metric(scrape(t, admin), "http", "oversized_bodies"); n != 2 {
		t.Errorf("too_large counter %d, want 2", n)
	}
}

// The mqtt plugin's up mapping of a 10 KiB resource publishes it whole:
// gatewayd's Observe hub gets block 0 in each notification (RFC 7959
// §2.6) and the plugin's Host.Observe fetches the rest with Block2 before
// it publishes. After the origin's representation changes, the stale
// blocks gatewayd's cache still holds are not spliced in. A second
// plugin with max_body = 4096 publishes nothing of it, logs the URI and
// the size and counts it. The down direction PUTs a 10 KiB MQTT message
// in Block1 blocks.
func TestMQTTPluginPublishesLargeRepresentationsWhole(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/mqtt/cmd/gatewayd-mqtt")
	port := startCoapServer(t)
	origin := fmt.Sprintf("coap://127.0.0.1:%d/example_data", port)
	upload := fmt.Sprintf("coap://127.0.0.1:%d/upload", port)
	first := bigBody(t, 10240)
	putOrigin(t, origin, first)
	b := startMosquitto(t)
	proxy := freePort(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan []byte, 16)
	sub, err := mqttConnect(ctx, b.Addr(), "big-sub", func(p *paho.Publish) { got <- bytes.Clone(p.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	defer mqttClose(sub)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gw/big", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	g := startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%[1]d"]
timeout = "5s"

[metrics]
listen = "127.0.0.1:0"

[[plugin]]
name = "mqtt"
path = %[2]q
sha256 = %[3]q
[plugin.config]
broker = "mqtt://%[4]s"
client_id = "gw-big"
[[plugin.config.up]]
observe = %[5]q
topic = "gw/big"
retain = true
[[plugin.config.down]]
topic = "gw/in/big"
put = %[6]q
content_format = 42

[[plugin]]
name = "mqtt-small"
path = %[2]q
sha256 = %[3]q
max_body = 4096
[plugin.config]
broker = "mqtt://%[4]s"
client_id = "gw-small"
[[plugin.config.up]]
observe = %[5]q
topic = "gw/small"
retain = true
`, proxy, bin, sum, b.Addr(), origin, upload), debugLog())
	log := g.log

	next := func(what string, want []byte) {
		t.Helper()
		select {
		case p := <-got:
			if !bytes.Equal(p, want) {
				t.Fatalf("%s: published %s, want the whole %s", what, digest(p), digest(want))
			}
		case <-ctx.Done():
			t.Fatalf("%s: nothing published\n%s", what, warnings(log.String()))
		}
	}
	next("first representation", first)
	// A new representation: its notification carries block 0 with a new
	// ETag, while gatewayd's cache holds blocks 1–9 of the first.
	second := bigBody(t, 10240)
	putOrigin(t, origin, second)
	next("changed representation", second)

	// Over max_body: refused whole by gatewayd, logged by both ends,
	// counted, and nothing published.
	waitLog(t, log, 15*time.Second, "representation over max_body", "plugin=mqtt-small", "uri="+origin, "size=10240", "max_body=4096")
	waitLog(t, log, 15*time.Second, "representation over max_body: not published", "plugin=mqtt-small", "topic=gw/small", "size=10240")
	if n := metric(scrape(t, g.adminAddr(t)), "mqtt-small", "oversized_bodies"); n < 1 {
		t.Errorf("too_large counter %d for mqtt-small", n)
	}
	// mosquitto sends the retained messages of a SUBSCRIBE's filters in
	// their order: the marker, retained on a topic of its own, comes
	// after whatever gw/small holds, so it coming first shows there is
	// nothing there.
	mpub := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, tool(t, "mosquitto_pub"), append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-q", "1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	mpub("-t", "gw/marker", "-r", "-m", "marker")
	first2, err := exec.CommandContext(ctx, tool(t, "mosquitto_sub"), "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port),
		"-t", "gw/small", "-t", "gw/marker", "-C", "1", "-F", "%t").Output()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	if s := strings.TrimSpace(string(first2)); s != "gw/marker" {
		t.Fatalf("gw/small holds a retained message (%s came first)", s)
	}

	// Down: a 10 KiB MQTT message becomes a Block1 PUT.
	down := bigBody(t, 10240)
	file := filepath.Join(t.TempDir(), "down")
	if err := os.WriteFile(file, down, 0o600); err != nil {
		t.Fatal(err)
	}
	mpub("-t", "gw/in/big", "-f", file)
	until(t, 30*time.Second, "the origin's /upload to hold what was published", func() error {
		out := filepath.Join(t.TempDir(), "upload")
		err := exec.CommandContext(ctx, tool(t, "coap-client-notls"), "-o", out, upload).Run()
		if b, _ := os.ReadFile(out); err != nil || !bytes.Equal(b, down) {
			return fmt.Errorf("%v: it has %s, want the %s published\n%s", err, digest(b), digest(down), warnings(log.String()))
		}
		return nil
	})
}
