package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool(t, "curl"), append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// HTTP clients reach radio nodes and IP CoAP servers through the HTTP
// plugin's front end and gatewayd's chain (RFC 8075), and CoAP clients
// reach HTTP servers through its translator.
func TestHTTPPluginBothWays(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	origin := startCoapServer(t)
	proxy, httpPort := freePort(t), freeTCPPort(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain;charset=utf-8")
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	}))
	defer web.Close()
	admin := startGatewayd(t, httpPluginConfig(proxy, "127.0.0.1:0", bin, sum, httpPort, "")).adminAddr(t)
	base := fmt.Sprintf("http://127.0.0.1:%d/hc/", httpPort)
	// The front end may need a moment after gatewayd reports it started,
	// and the simulated radio too on a busy machine (a 5.03 "radio sim
	// down" is HTTP 503, which -f makes a failure to retry).
	var body string
	until(t, 10*time.Second, "curl to a radio node", func() error {
		out, err := exec.Command(tool(t, "curl"), "-fsS", "--max-time", "20", base+"coap://["+sim.NodeAddr(sim.DefaultPrefix, 0).String()+"]/sensors/temp").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		body = string(out)
		return nil
	})
	if !strings.Contains(body, ".") {
		t.Fatalf("radio node via HTTP: %q", body)
	}
	if out := curl(t, base+fmt.Sprintf("coap://127.0.0.1:%d/", origin)); !strings.Contains(out, "libcoap") {
		t.Fatalf("IP CoAP server via HTTP: %q", out)
	}
	if out := curl(t, "-X", "PUT", "-H", "Content-Type: text/plain;charset=utf-8", "--data-binary", "open", base+"coap://["+sim.NodeAddr(sim.DefaultPrefix, 1).String()+"]/actuators/valve", "-o", "/dev/null", "-w", "%{http_code}"); out != "204" {
		t.Fatalf("PUT via HTTP: status %q, want 204 (2.04 Changed)", out)
	}
	// The plugin shows in the metrics.
	if m := curl(t, "http://"+admin+"/metrics"); !strings.Contains(m, `gatewayd_plugin_up{plugin="http"} 1`) {
		t.Fatalf("metrics do not show the plugin up:\n%s", m)
	}
	// CoAP to HTTP: Proxy-Uri http://...
	out := coapClient(t, "coap-client-notls", "-m", "get", "-P", fmt.Sprintf("coap://127.0.0.1:%d", proxy), web.URL+"/page")
	if !strings.Contains(out, "hello from /page") {
		t.Fatalf("CoAP client via the HTTP translator: %q", out)
	}
}

// httpPluginConfig is gatewayd with a sim radio (its [radio.sim] table
// sim, "" for none) and the HTTP plugin (binary bin, its SHA-256 sum)
// serving on httpPort, the proxy on UDP port proxy and the admin endpoint
// on admin ("" for none).
func httpPluginConfig(proxy int, admin, bin, sum string, httpPort int, sim string) string {
	return fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
timeout = "10s"

[metrics]
listen = %q

[[radio]]
name = "sim"
driver = "sim"
%s

[[plugin]]
name = "http"
path = %q
sha256 = %q
[plugin.config]
listen = "127.0.0.1:%d"
`, proxy, admin, sim, bin, sum, httpPort)
}
