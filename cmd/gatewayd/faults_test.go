package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// outcome is one request of a load: when it was answered, and how.
type outcome struct {
	sent, at time.Time
	route    string // "plugin" or "origin"
	code     coap.Code
	maxAge   uint32
	hasAge   bool
	payload  string
	err      error
}

// A plugin killed with SIGKILL while requests stream through its route:
// every request meanwhile is answered, either by the plugin or with 5.03
// and a Max-Age saying when to retry (never a 5.00, never no answer);
// requests on the other routes all succeed; the supervisor starts the
// plugin again and its route serves. The test logs how many requests
// failed and how long the route was down.
func TestPluginKilledUnderLoadAnswers503UntilItServesAgain(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	gwd := startPluginRoutes(t, bin, sum, func(w http.ResponseWriter, r *http.Request) {
		// Never stored: every request must cross the plugin.
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	})
	proxy, admin, web, log := gwd.proxy, gwd.admin, gwd.web, gwd.g.log
	gwd.waitPluginUp(t, "the plugin to come up")
	pids := pluginPIDs(t, gwd.g.pid(), bin)
	if len(pids) != 1 {
		t.Fatalf("plugin processes %v, want one", pids)
	}

	gw := netipAddrPort(proxy)
	var (
		mu       sync.Mutex
		outcomes []outcome // guarded by mu
		okPlugin atomic.Int64
	)
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	worker := func(c *coap.Endpoint, w int, route string) {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
			if route == "plugin" {
				req.Options = req.Options.Insert(coap.ProxyURI, fmt.Appendf(nil, "%s/page/%d/%d", web, w, i))
			} else {
				req.Options = pathOpts("/origin/")
			}
			o := outcome{sent: time.Now(), route: route}
			rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			resp, err := c.Do(rctx, gw, req)
			cancel()
			o.at, o.err = time.Now(), err
			if err == nil {
				o.code, o.payload = resp.Code, string(resp.Payload)
				o.maxAge, o.hasAge = resp.Options.Uint(coap.MaxAge)
				if route == "plugin" && resp.Code == coap.Content {
					okPlugin.Add(1)
				}
			}
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}
	for w := range 4 {
		c := coapEndpoint(t)
		wg.Add(1)
		go worker(c, w, "plugin")
	}
	c := coapEndpoint(t)
	wg.Add(1)
	go worker(c, 0, "origin")
	defer func() { stop(); wg.Wait() }()

	defer func() {
		if t.Failed() {
			t.Logf("%d requests served through the plugin; warnings:\n%s", okPlugin.Load(), warnings(log.String()))
		}
	}()
	waitCount := func(n int64, what string) {
		t.Helper()
		testutil.EventuallyWithin(t, 30*time.Second, fmt.Sprintf("%d requests served through the plugin %s", n, what), func() bool { return okPlugin.Load() >= n })
	}
	waitCount(50, "before the kill")
	// Taken before the kill: gatewayd may see the plugin die and answer
	// 5.03s before this goroutine runs again after the system call, and
	// every 5.03 it counts must fall after killed.
	killed := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until another process runs and has served 50 more requests.
	var second int
	testutil.EventuallyWithin(t, 30*time.Second, "a new plugin process", func() bool {
		if p := pluginPIDs(t, gwd.g.pid(), bin); len(p) == 1 && p[0] != pids[0] {
			second = p[0]
		}
		return second != 0
	})
	waitCount(okPlugin.Load()+50, "after the restart")
	stop()
	wg.Wait()

	var (
		unavailable, served, originOK int
		first503, last503, back       time.Time
		bad                           []string
	)
	for _, o := range outcomes {
		if o.at.Before(killed) {
			continue
		}
		switch {
		case o.err != nil:
			bad = append(bad, fmt.Sprintf("%s request sent %v after the kill: no answer: %v", o.route, o.sent.Sub(killed), o.err))
		case o.route == "origin":
			if o.code != coap.Content || !strings.Contains(o.payload, "libcoap") {
				bad = append(bad, fmt.Sprintf("the origin's route while the plugin was down: %v %q", o.code, o.payload))
			}
			originOK++
		case o.code == coap.ServiceUnavailable:
			if !o.hasAge || o.maxAge < 1 {
				bad = append(bad, fmt.Sprintf("5.03 without Max-Age (present %v, %d)", o.hasAge, o.maxAge))
			}
			unavailable++
			if first503.IsZero() {
				first503 = o.at
			}
			last503 = o.at
		case o.code == coap.Content && strings.HasPrefix(o.payload, "hello from /page/"):
			served++
			if !last503.IsZero() && back.IsZero() && o.sent.After(last503) {
				back = o.at
			}
		default:
			bad = append(bad, fmt.Sprintf("the plugin's route after the kill: %v %q, want 2.05 or 5.03 with Max-Age", o.code, o.payload))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of the answers after the kill are wrong; the first: %q", len(bad), bad[:min(5, len(bad))])
	}
	if unavailable == 0 {
		t.Fatal("no request met the plugin down: nothing was shown")
	}
	if back.IsZero() {
		t.Fatal("no request served after the last 5.03")
	}
	st := adminStatus(t, admin)
	if len(st.Plugins) != 1 || !st.Plugins[0].Up || st.Plugins[0].Restarts != 1 {
		t.Errorf("/status plugins after the restart: %+v", st.Plugins)
	}
	if m := scrape(t, admin); !strings.Contains(m, fmt.Sprintf(`gatewayd_plugin_unavailable_responses_total{plugin="http"} %d`, unavailable)) {
		t.Errorf("%d 5.03s answered; metrics:\n%s", unavailable, grepLines(m, "gatewayd_plugin_unavailable"))
	}
	t.Logf("plugin pid %d killed under load (4 clients on its route, 1 on another): %d requests answered 5.03 with Max-Age, "+
		"%d served after the kill; first 5.03 %v after the kill, last %v; the route served again %v after the kill "+
		"(pid %d); the other route answered all %d",
		pids[0], unavailable, served, first503.Sub(killed).Round(time.Millisecond), last503.Sub(killed).Round(time.Millisecond),
		back.Sub(killed).Round(time.Millisecond), second, originOK)
	if originOK == 0 {
		t.Error("no request on the other route after the kill")
	}
}
