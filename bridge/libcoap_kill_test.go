//go:build linux

package bridge

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// A libcoap observer killed with SIGKILL deregisters nothing; its port
// closes with it, and the next notification the proxy sends there is
// answered by the host with ICMP port unreachable. The hub removes the
// observer on that report and, as it was the only one, cancels the
// origin's observation: the origin sees the deregistration. All within
// seconds, where the CON of RFC 7641 §4.5 would take a minute or more to
// time out.
func TestKilledLibcoapObserverIsRemovedAndUpstreamCancelled(t *testing.T) {
	origin, uri := observableServer(t)
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := testpeer.StartLibcoap(ctx, t, 0, "-s", "60", "-m", "get",
		"-P", "coap://"+p.Addrs()[0].String(), uri)
	what := func() string {
		return fmt.Sprintf("hub %+v\nproxy endpoint %+v\nclient's log:\n%s", p.Hub().Stats(), p.servers[0].Stats(), client.Log())
	}
	// The origin notifies often, as long as the test runs.
	stop := make(chan struct{})
	notifier := make(chan struct{})
	go func() {
		defer close(notifier)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				origin.notify()
			}
		}
	}()
	defer func() { close(stop); <-notifier }()

	waitFor := func(what string, d time.Duration, cond func() bool, detail func() string) {
		t.Helper()
		defer func() {
			if t.Failed() {
				t.Log(detail())
			}
		}()
		testutil.EventuallyWithin(t, d, what, cond)
	}
	// Registered, and notifications reach it.
	waitFor("the client to observe", 20*time.Second, func() bool {
		return p.Hub().Stats().Observers == 1 && p.Hub().Stats().NotificationsOut > 0 && client.Payloads() != ""
	}, what)
	if err := client.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := client.Wait(); err == nil {
		t.Fatal("coap-client exited cleanly: not killed")
	}
	waitFor("the observer's removal", 20*time.Second, func() bool { return p.Hub().Stats().Observers == 0 }, what)
	waitFor("the upstream observation's cancellation", 20*time.Second, func() bool {
		origin.mu.Lock()
		defer origin.mu.Unlock()
		return origin.deregs > 0 && p.Hub().Stats().Upstreams == 0
	}, what)
	s := p.Hub().Stats()
	if s.Unreachable != 1 || s.Deregistrations != 1 || s.Unconfirmed != 0 || s.Rejected != 0 {
		t.Fatalf("hub %+v: want the observer removed once, on the ICMP report", s)
	}
	origin.mu.Lock()
	regs := origin.regs
	origin.mu.Unlock()
	if regs != 1 {
		t.Fatalf("the origin saw %d registrations, want 1", regs)
	}
	// The operator sees it in the metrics.
	admin, err := p.ServeAdmin(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{
		"gatewayd_observe_unreachable_observers_total 1",
		"gatewayd_observe_unconfirmed_notifications_total 0",
		"gatewayd_observe_rejected_notifications_total 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// At least the one report; a notification sent before the first
	// was read, on a loaded machine, brings another.
	if !regexp.MustCompile(`gatewayd_endpoint_unreachable_exchanges_total\{listen="udp://127.0.0.1:0"\} [1-9]`).MatchString(body) {
		t.Errorf("metrics lack the listener's vetted ICMP reports:\n%s", body)
	}
}
