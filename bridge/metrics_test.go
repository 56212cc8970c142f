package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// fullProxy is a proxy with every part that has metrics: a sim radio, the
// broker, the resource directory, a reverse route, and a plugin whose file is missing (so it is
// down, and the proxy serves without it). Its admin endpoint is served.
func fullProxy(t *testing.T, mod func(*Config)) (p *Proxy, admin string) {
	t.Helper()
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0", "tcp://127.0.0.1:0"}
	cfg.Proxy.Name = "gw-test"
	cfg.Route = []RouteConfig{{Name: "origin", Target: "coap://127.0.0.1:9"}}
	cfg.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
	cfg.PubSub.Enabled = true
	cfg.PubSub.StateDir = t.TempDir()
	cfg.RD.Enabled = true
	cfg.RD.StateDir = t.TempDir()
	cfg.Plugin = []plugins.Config{{Name: "gone", Path: filepath.Join(t.TempDir(), "gatewayd-gone"), SHA256: strings.Repeat("ab", 32)}}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, nil, WithVersion("1.2.3+test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	admin, err = p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return p, admin
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Profiling is opt-in: by default anyone who reaches the admin port gets
// /metrics and /status, never a CPU profile or a trace.
func TestPProfIsServedOnlyWhenConfigured(t *testing.T) {
	for _, on := range []bool{false, true} {
		p := startProxy(t, func(c *Config) { c.Metrics.PProf = on })
		addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
			if got := httpStatus(t, "http://"+addr+path); got != want {
				t.Errorf("pprof = %v: GET %s: %d, want %d", on, path, got, want)
			}
		}
		if got := httpStatus(t, "http://"+addr+"/metrics"); got != http.StatusOK {
			t.Errorf("pprof = %v: /metrics %d", on, got)
		}
	}
	if d := Defaults(); d.Metrics.PProf {
		t.Error("pprof is on by default")
	}
}

// The metrics pass promtool's lint (Debian package prometheus): counters
// end in _total, units are base units, help is there. Each family has
// one meaning, labelled only by which listener, radio or plugin it is
// about; the Go runtime and the process are there, and which gatewayd
// runs.
func TestMetricsPassPromtoolAndHaveOneMeaningEach(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make deps` (Debian package prometheus)")
	}
	p, admin := fullProxy(t, nil)
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[proxy]\nlisten = 1\n"), 0o600)
	if _, err := p.ReloadFile(bad); err == nil {
		t.Fatal("a broken file reloaded")
	}
	c := client(t)
	do(t, c, p, &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))})
	// The request is counted once answered: the answer may reach the
	// client before the count is made.
	var body string
	testutil.Eventually(t, "the request in /metrics", func() bool {
		body = httpGet(t, "http://"+admin+"/metrics")
		return strings.Contains(body, `gatewayd_requests_total{code="2.05",method="GET"} 1`)
	})

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	for _, want := range []string{
		`go_goroutines `,
		`process_cpu_seconds_total `,
		`process_resident_memory_bytes `,
		`gatewayd_build_info{goversion="` + runtime.Version() + `",version="1.2.3+test"} 1`,
		`gatewayd_reloads_total{outcome="failure"} 1`,
		`gatewayd_reloads_total{outcome="success"} 0`,
		`gatewayd_cache_entries 0`,
		`gatewayd_cache_bytes 0`,
		`gatewayd_cache_hits_total 0`,
		`gatewayd_cache_misses_total 0`,
		`gatewayd_requests_total{code="2.05",method="GET"} 1`,
		`gatewayd_endpoint_datagrams_received_total{listen="udp://127.0.0.1:0"} `,
		`gatewayd_radio_up{radio="sim"} `,
		`gatewayd_radio_frames_sent_total{radio="sim"} `,
		`gatewayd_plugin_up{plugin="gone"} 0`,
		`gatewayd_plugin_start_failures_total{plugin="gone"} `,
		`gatewayd_pubsub_topics 0`,
		`gatewayd_rd_registrations 0`,
		`gatewayd_observe_observers 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// No catch-all label that mixes unrelated counts in one family.
	if m := regexp.MustCompile(`(?m)^gatewayd_\w+\{[^}]*\bcounter="`).FindString(body); m != "" {
		t.Errorf("a family with a generic counter label: %s", m)
	}
}

// Every gatewayd_ family is named in the README, with the man page
// gatewayd(8) checked by the packaging tests.
func TestREADMENamesEveryMetricFamily(t *testing.T) {
	p, _ := fullProxy(t, nil)
	readme := string(mustRead(t, "README.md"))
	for _, name := range metricFamilies(t, p) {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README.md does not name the metric %s", name)
		}
	}
}

// metricFamilies are the names of the proxy's gatewayd_ families.
func metricFamilies(t *testing.T, p *Proxy) []string {
	t.Helper()
	mfs, err := p.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "gatewayd_") {
			names = append(names, mf.GetName())
		}
	}
	if len(names) < 40 {
		t.Fatalf("only %d gatewayd_ families: %v", len(names), names)
	}
	return names
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ReloadFile counts each reload by its outcome.
func TestReloadFileCountsOutcomes(t *testing.T) {
	p := startProxy(t, nil)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.toml"), filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("[proxy]\nlisten = [\"udp://127.0.0.1:0\"]\ntimeout = \"2s\"\n"), 0o600)
	os.WriteFile(bad, []byte("[proxy]\ntimeout = \"-1s\"\n"), 0o600)
	if _, err := p.ReloadFile(bad); err == nil {
		t.Fatal("a negative timeout reloaded")
	}
	if _, err := p.ReloadFile(good); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReloadFile(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("a missing file reloaded")
	}
	ok, failed := reloadCount(t, p, "success"), reloadCount(t, p, "failure")
	if ok != 1 || failed != 2 {
		t.Fatalf("reloads: %v succeeded, %v failed; want 1 and 2", ok, failed)
	}
}

func reloadCount(t *testing.T, p *Proxy, outcome string) float64 {
	t.Helper()
	return metricValue(t, p, "gatewayd_reloads_total", outcome)
}

// metricValue is the value of the counter or gauge name whose first label
// is label.
func metricValue(t *testing.T, p *Proxy, name, label string) float64 {
	t.Helper()
	mfs, err := p.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() != label {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s{%q}", name, label)
	return 0
}

// /status says which gatewayd runs and since when, and what the effective
// configuration serves: listeners, routes, radios and plugins, each with
// its state.
func TestStatusShowsVersionListenersRoutesRadiosAndPlugins(t *testing.T) {
	p, admin := fullProxy(t, nil)
	var st Status
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+admin+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.2.3+test" || st.GoVersion != runtime.Version() || st.UptimeSeconds <= 0 ||
		time.Since(st.Started) > time.Minute {
		t.Errorf("version %q, go %q, started %v, uptime %v", st.Version, st.GoVersion, st.Started, st.UptimeSeconds)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Listen != "udp://127.0.0.1:0" || st.Listeners[0].Addr != p.Addrs()[0].String() {
		t.Errorf("listeners %+v", st.Listeners)
	}
	if !slices.Equal(st.Routes, []RouteConfig{{Name: "origin", Target: "coap://127.0.0.1:9"}}) {
		t.Errorf("routes %+v", st.Routes)
	}
	if len(st.Radios) != 1 || st.Radios[0].Name != "sim" || st.Radios[0].Driver != "sim" || st.Radios[0].Prefix != sim.DefaultPrefix.String() {
		t.Errorf("radios %+v", st.Radios)
	}
	if len(st.Plugins) != 1 {
		t.Fatalf("plugins %+v", st.Plugins)
	}
	if pl := st.Plugins[0]; pl.Name != "gone" || pl.Up || !strings.Contains(pl.LastError, "no such file") || pl.RetryAt.IsZero() || pl.Failures == 0 {
		t.Errorf("the plugin that cannot start: %+v", pl)
	}
	if st.PubSub == nil {
		t.Error("no broker counters with [pubsub] enabled")
	}
	if st.RD == nil || st.RD.Endpoints == nil {
		t.Errorf("no resource directory with [rd] enabled: %+v", st.RD)
	}
}

// Warnings name what a valid configuration still gets wrong.
func TestConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		warning string // "" for none
	}{
		{"defaults", func(*Config) {}, ""},
		{"LAN clients, no loopback in allow", func(c *Config) {
			c.Proxy.Clients = []string{"127.0.0.0/8", "192.168.1.0/24"}
			c.Proxy.Allow = []string{"fd00::/8"}
		}, ""},
		{"LAN clients, loopback allowed", func(c *Config) {
			c.Proxy.Clients = []string{"127.0.0.0/8", "::1/128", "192.168.1.0/24"}
		}, "clients admits 192.168.1.0/24, beyond loopback, and allow contains 127.0.0.0/8"},
		{"everyone, everything", func(c *Config) {
			c.Proxy.Clients = []string{"::/0"}
			c.Proxy.Allow = []string{"fd00::/8", "::/0"}
		}, "allow contains ::/0"},
		{"IPv4-mapped loopback", func(c *Config) {
			c.Proxy.Clients = []string{"10.0.0.0/8"}
			c.Proxy.Allow = []string{"::ffff:127.0.0.1/128"}
		}, "allow contains ::ffff:127.0.0.1/128"},
		{"narrow loopback clients only", func(c *Config) {
			c.Proxy.Clients = []string{"127.0.0.1/32", "::ffff:127.0.0.0/104"}
		}, ""},
		{"pprof on loopback", func(c *Config) { c.Metrics.PProf = true }, ""},
		{"radio plugin without ext_addr", func(c *Config) {
			c.Plugin = []plugins.Config{{Name: "slip", Path: "/nonexistent", SHA256: strings.Repeat("ab", 32)}}
			c.Radio = []radio.Config{{Name: "mesh", Driver: "plugin:slip", Prefix: sim.DefaultPrefix}}
		}, `radio "mesh": driver "plugin:slip" and no ext_addr`},
		{"radio plugin with ext_addr", func(c *Config) {
			c.Plugin = []plugins.Config{{Name: "slip", Path: "/nonexistent", SHA256: strings.Repeat("ab", 32)}}
			c.Radio = []radio.Config{{Name: "mesh", Driver: "plugin:slip", Prefix: sim.DefaultPrefix}}
			c.Radio[0].ExtAddr.UnmarshalText([]byte("18:b4:30:00:00:00:00:01"))
		}, ""},
		{"pprof beyond loopback", func(c *Config) {
			c.Metrics.PProf = true
			c.Metrics.Listen = "0.0.0.0:9683"
		}, `pprof is on and listen "0.0.0.0:9683" is not loopback`},
		{"admin beyond loopback without a token", func(c *Config) {
			c.Metrics.Listen = "[::]:9683"
		}, `metrics: listen "[::]:9683" is not loopback and there is no token_file`},
		{"admin beyond loopback with a token", func(c *Config) {
			c.Metrics.Listen = "192.0.2.1:9683"
			c.Metrics.TokenFile = "/etc/gatewayd/admin.token"
		}, ""},
	} {
		c := Defaults()
		tc.mod(&c)
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		w := strings.Join(c.Warnings(), "\n")
		if tc.warning == "" && w != "" || !strings.Contains(w, tc.warning) {
			t.Errorf("%s: warnings %q, want %q", tc.name, w, tc.warning)
		}
	}
}

// The package's config allows no loopback target, so that adding the LAN
// to clients, as its comments say to, opens no way to the gateway's own
// loopback services.
func TestShippedConfigAllowsNoLoopbackTarget(t *testing.T) {
	data := mustRead(t, "../packaging/gatewayd.toml")
	c, err := Parse("gatewayd.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Proxy.Allow {
		if pfx, _ := parsePrefixes([]string{a}); slices.ContainsFunc(loopback, pfx[0].Overlaps) {
			t.Errorf("the shipped allow contains %s", a)
		}
	}
	// As the comment on clients suggests.
	lan := bytes.Replace(data, []byte(`clients = ["127.0.0.0/8", "::1/128"]`),
		[]byte(`clients = ["127.0.0.0/8", "::1/128", "192.168.1.0/24", "fd12:3456:789a::/48"]`), 1)
	if bytes.Equal(lan, data) {
		t.Fatal("the shipped config has no clients line to edit")
	}
	if c, err = Parse("gatewayd.toml", lan); err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) > 0 {
		t.Errorf("the shipped config with the LAN in clients: %q", w)
	}
}

// The metrics stage's counter is allocated with the writer it wraps for
// every request (coap.WrapWriterWith): at 40 bytes the two fit the 80-byte
// size class, at 48 the 96-byte one (BenchmarkForwardGET's B/op).
func TestCounterIsSmall(t *testing.T) {
	if n := unsafe.Sizeof(counter{}); n > 40 {
		t.Errorf("counter is %d bytes, want at most 40", n)
	}
}
