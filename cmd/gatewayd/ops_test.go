package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// -check verifies what a start verifies of each plugin: its file, owner,
// mode and digest. With -check-plugins=false (the unit's ExecStartPre and
// ExecReload: a plugin that cannot start does not stop gatewayd) only the
// configuration is checked.
func TestCheckVerifiesPluginFilesAsAStartDoes(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "gatewayd-x")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	config := func(sum string) string {
		return writeFile(t, "c.toml", fmt.Sprintf("[[plugin]]\nname = \"x\"\npath = %q\nsha256 = %q\n", plugin, sum))
	}
	check := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"-check"}, args...), &out, &bytes.Buffer{})
		return out.String(), err
	}
	stale := config(strings.Repeat("ab", 32))
	if _, err := check("-config", stale); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") || !strings.Contains(err.Error(), plugin) {
		t.Fatalf("-check with a stale digest: %v", err)
	}
	if out, err := check("-config", stale, "-check-plugins=false"); err != nil || !strings.Contains(out, "configuration ok") {
		t.Fatalf("-check -check-plugins=false: %v %q", err, out)
	}
	if out, err := check("-config", config(fileSHA256(t, plugin))); err != nil || !strings.Contains(out, "configuration ok") {
		t.Fatalf("-check with the right digest: %v %q", err, out)
	}
	os.Chmod(plugin, 0o644)
	if _, err := check("-config", config(fileSHA256(t, plugin))); err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("-check with a file that is not executable: %v", err)
	}
	os.Remove(plugin)
	if _, err := check("-config", config(strings.Repeat("ab", 32))); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("-check with the file missing: %v", err)
	}
}

// -check reads [metrics] token_file as a start would, and warns of a file
// that would keep the admin endpoint closed.
func TestCheckWarnsOfATokenFileAStartWouldRefuse(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte("c2VjcmV0LXRva2VuLTAxMjM0NTY3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := writeFile(t, "c.toml", fmt.Sprintf("[metrics]\nlisten = \"127.0.0.1:9683\"\ntoken_file = %q\n", tok))
	check := func() (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"-check", "-config", config}, &out, &errb)
		return out.String(), errb.String(), err
	}
	if out, warn, err := check(); err != nil || !strings.Contains(out, "configuration ok") || warn != "" {
		t.Fatalf("a good token file: %v %q %q", err, out, warn)
	}
	os.Chmod(tok, 0o604)
	if out, warn, err := check(); err != nil || !strings.Contains(out, "configuration ok") ||
		!strings.Contains(warn, "lets others use it") || !strings.Contains(warn, "will not be served") {
		t.Fatalf("a world-readable token file: %v %q %q", err, out, warn)
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	sum, err := testpeer.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// Clients beyond loopback with loopback in allow: -check warns (and still
// passes, the file being valid), and so does the start.
func TestCheckAndStartWarnWhenLANClientsMayReachLoopback(t *testing.T) {
	port := freePort(t)
	cfg := fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\nclients = [\"127.0.0.0/8\", \"192.168.1.0/24\"]\nallow = [\"127.0.0.0/8\", \"fd00::/8\"]\n[metrics]\nlisten = \"\"\n", port)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"-check", "-config", writeFile(t, "c.toml", cfg)}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	const want = "clients admits 192.168.1.0/24, beyond loopback, and allow contains 127.0.0.0/8"
	if !strings.Contains(errb.String(), "warning: proxy: "+want) || !strings.Contains(out.String(), "configuration ok") {
		t.Fatalf("-check: stdout %q, stderr %q", out.String(), errb.String())
	}
	log := startGatewayd(t, cfg, debugLog()).log
	if !regexp.MustCompile(`level=WARN msg="configuration warning".*` + regexp.QuoteMeta(want)).MatchString(log.String()) {
		t.Fatalf("no warning at the start:\n%s", log.String())
	}
}

// A plugin that cannot start (here: its file has another digest than the
// configured one, as after an upgrade that rebuilt it) does not take
// gatewayd down: the daemon starts, serves its other routes, answers the
// plugin's with 5.03 and Max-Age, logs the plugin at error level and shows
// it down in /status and the metrics; once the file is right, the plugin
// comes up by itself on its backoff and serves.
func TestGatewaydServesWithoutAPluginThatCannotStartAndPicksItUpLater(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	path := filepath.Join(t.TempDir(), "gatewayd-http")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if fileSHA256(t, path) == sum {
		t.Fatal("the stand-in has the plugin's digest")
	}
	gwd := startPluginRoutes(t, path, sum, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	})
	proxy, admin, log := gwd.proxy, gwd.admin, gwd.g.log

	if !regexp.MustCompile(`level=ERROR msg="plugin cannot start[^\n]*plugin=http[^\n]*sha256 mismatch`).MatchString(log.String()) {
		t.Fatalf("no error-level line for the plugin:\n%s", log.String())
	}
	// A route that needs no plugin: libcoap's server behind a reverse route.
	if out := coapClient(t, "coap-client-notls", "-m", "get", fmt.Sprintf("coap://127.0.0.1:%d/origin/", proxy)); !strings.Contains(out, "libcoap") {
		t.Fatalf("the reverse route while the plugin is down: %q", out)
	}
	// The plugin's: http:// through the proxy.
	c := coapEndpoint(t)
	gw := netipAddrPort(proxy)
	toWeb := func() (*coap.Message, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
		req.Options = req.Options.Insert(coap.ProxyURI, []byte(gwd.web+"/page"))
		return c.Do(ctx, gw, req)
	}
	resp, err := toWeb()
	if err != nil {
		t.Fatal(err)
	}
	if ma, ok := resp.Options.Uint(coap.MaxAge); resp.Code != coap.ServiceUnavailable || !ok || ma < 1 {
		t.Fatalf("the plugin's route while it cannot start: %v, Max-Age %v (present %v); want 5.03 with Max-Age", resp.Code, ma, ok)
	}
	st := adminStatus(t, admin)
	if len(st.Plugins) != 1 || st.Plugins[0].Up || !strings.Contains(st.Plugins[0].LastError, "sha256 mismatch") || st.Plugins[0].RetryAt.IsZero() {
		t.Fatalf("/status plugins: %+v", st.Plugins)
	}
	if m := scrape(t, admin); !strings.Contains(m, `gatewayd_plugin_up{plugin="http"} 0`) ||
		!regexp.MustCompile(`gatewayd_plugin_start_failures_total\{plugin="http"\} [1-9]`).MatchString(m) {
		t.Fatalf("metrics of the plugin that cannot start:\n%s", grepLines(m, "gatewayd_plugin"))
	}

	// The right file arrives, renamed into place as dpkg does.
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	gwd.waitPluginUp(t, "the plugin to come up by itself")
	if resp, err = toWeb(); err != nil || resp.Code != coap.Content || string(resp.Payload) != "hello from /page" {
		t.Fatalf("the plugin's route once it is up: %v %v", resp, err)
	}
	if m := scrape(t, admin); !strings.Contains(m, `gatewayd_plugin_up{plugin="http"} 1`) {
		t.Fatalf("metrics once up:\n%s", grepLines(m, "gatewayd_plugin"))
	}
}

// pluginRoutes is a gatewayd with two routes, for the tests of a plugin
// that fails: libcoap's server behind the reverse route "origin", and
// the HTTP plugin, its front end off, for http:// proxy URIs to web.
type pluginRoutes struct {
	g          *instance
	proxy      int    // gatewayd's CoAP port on 127.0.0.1
	admin, web string // the admin endpoint's address; the web server's URL
}

// startPluginRoutes starts libcoap's server, a web server with h and
// gatewayd with the HTTP plugin at path, expected to have digest sum.
func startPluginRoutes(t *testing.T, path, sum string, h http.HandlerFunc) pluginRoutes {
	t.Helper()
	origin := startCoapServer(t)
	web := httptest.NewServer(h)
	t.Cleanup(web.Close)
	r := pluginRoutes{proxy: freePort(t), web: web.URL}
	r.g = startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
allow = ["127.0.0.0/8"]
timeout = "10s"

[[route]]
name = "origin"
target = "coap://127.0.0.1:%d"

[metrics]
listen = "127.0.0.1:0"

[[plugin]]
name = "http"
path = %q
sha256 = %q
[plugin.config]
listen = "off"
`, r.proxy, origin, path, sum), debugLog())
	r.admin = r.g.adminAddr(t)
	return r
}

// waitPluginUp waits for /status to show the plugin up, failing t with
// what and the log after 30 s: a plugin's start, or its restart on its
// backoff, takes seconds on a busy machine.
func (r pluginRoutes) waitPluginUp(t *testing.T, what string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("gatewayd's log:\n%s", r.g.log.String())
		}
	}()
	testutil.EventuallyWithin(t, 30*time.Second, what, func() bool {
		st := adminStatus(t, r.admin)
		return len(st.Plugins) == 1 && st.Plugins[0].Up
	})
}

func adminStatus(t *testing.T, admin string) bridge.Status {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st bridge.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// logKeys are the attribute keys of one text log line, in order.
func logKeys(line string) []string {
	var keys []string
	for i := 0; i < len(line); {
		j := strings.IndexByte(line[i:], '=')
		if j < 0 {
			break
		}
		keys = append(keys, strings.TrimSpace(line[i:i+j]))
		i += j + 1
		if i < len(line) && line[i] == '"' { // a quoted value
			for i++; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
			}
			i++
		}
		for i < len(line) && line[i] != ' ' {
			i++
		}
	}
	return keys
}

// Each log line names an attribute once: the radio's driver lines (the
// sim runs the real Spinel driver) once said component=radio … component=
// spinel, and the plugin host's component=plugins … component=plugins.
func TestLogLinesCarryEachAttributeOnce(t *testing.T) {
	g := startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%d"]
[metrics]
listen = ""
[[radio]]
name = "sim"
driver = "sim"
[[plugin]]
name = "gone"
path = %q
sha256 = %q
`, freePort(t), filepath.Join(t.TempDir(), "gatewayd-gone"), strings.Repeat("ab", 32)), debugLog())
	log := g.log
	g.waitLog(t, `msg="rcp up"`, startTimeout)
	var checked int
	for _, line := range strings.Split(log.String(), "\n") {
		if line == "" {
			continue
		}
		seen := map[string]bool{}
		for _, k := range logKeys(line) {
			if seen[k] {
				t.Errorf("%s twice in: %s", k, line)
			}
			seen[k] = true
		}
		if strings.Contains(line, `msg="rcp up"`) || strings.Contains(line, "plugin cannot start") {
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("the driver's and the plugin host's lines were not both there:\n%s", log.String())
	}
}
