//go:build !nodemo

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// -check without -config checks the demo's built-in defaults, and says so
// rather than a bare "configuration ok" an operator would take for the
// installed file's.
func TestCheckWithoutConfigSaysItCheckedTheDemoDefaults(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-check"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "demo defaults") || !strings.Contains(s, "-config /etc/gatewayd/gatewayd.toml") {
		t.Fatalf("-check without -config: %q", s)
	}
}

// The README's first command, `go run ./cmd/gatewayd` with no
// configuration, runs the demo: the banner's commands reach the
// simulated nodes through the proxy, by proxy URI and, once they have
// registered with the resource directory, by the names they registered;
// node 1 publishes to the broker, where discovery finds the topic; and
// the throwaway keys are gone once it stops.
func TestDemoWithoutConfigServesTheBannersCommands(t *testing.T) {
	port := freePort(t)
	old, oldAdmin := demoListen, demoAdmin
	demoListen = fmt.Sprintf("udp://127.0.0.1:%d", port)
	demoAdmin = "127.0.0.1:0"
	t.Cleanup(func() { demoListen, demoAdmin = old, oldAdmin })

	g := startGatewayd(t, "")
	stderr := g.log
	g.waitOutput(t, g.out, "Stop with Ctrl-C.", 30*time.Second)
	banner := g.out.String()
	P := fmt.Sprintf("coap://127.0.0.1:%d", port)
	node := fmt.Sprintf("coap://[%v]", sim.NodeAddr(sim.DefaultPrefix, 0))
	for _, want := range []string{"-P " + P + " '" + node + "/sensors/temp'", P + "/node1/sensors/temp", "rt=core.ps.data", P + "/rd-lookup/ep"} {
		if !strings.Contains(banner, want) {
			t.Fatalf("the banner lacks %q:\n%s", want, banner)
		}
	}
	// Over the simulated radio a request may meet the radio coming up
	// (5.03) or a lost frame (5.04); a user tries again, so does this.
	defer func() {
		if t.Failed() {
			t.Logf("gatewayd's log:\n%s", stderr.String())
		}
	}()
	get := func(what string, ok func(string) bool, args ...string) string {
		t.Helper()
		return coapClientRetrying(t, 30*time.Second, what, ok, args...)
	}
	reading := regexp.MustCompile(`(?m)^[0-9]+\.[0-9]$`)
	get("GET through the proxy", reading.MatchString, "-m", "get", "-P", P, node+"/sensors/temp")
	if want := "-O 65002,0x05 -P " + P + " 'coap://[ff05::fd]/sensors/temp'"; !strings.Contains(banner, want) {
		t.Fatalf("the banner lacks the group request %q:\n%s", want, banner)
	}
	get("group GET", reading.MatchString, "-m", "get", "-O", "65002,0x05", "-P", P, "coap://[ff05::fd]/sensors/temp")
	// The nodes register themselves (simple registration over the
	// radio); the banner's lookup lists the three, each at its address.
	var eps string
	listed := func(o string) bool {
		for i := range sim.DefaultNodes {
			if !strings.Contains(o, fmt.Sprintf(`;ep=node%d;base="coap://[%v]"`, i+1, sim.NodeAddr(sim.DefaultPrefix, i))) {
				return false
			}
		}
		return true
	}
	until(t, 60*time.Second, "the endpoint lookup to list the three nodes", func() error {
		if eps = coapClient(t, "coap-client-notls", "-m", "get", P+"/rd-lookup/ep"); !listed(eps) {
			return fmt.Errorf("%q", eps)
		}
		return nil
	})
	res := get("resource lookup", func(o string) bool { return strings.Contains(o, node+"/sensors/temp>") },
		"-m", "get", P+"/rd-lookup/res?rt=temperature-c")
	if n := strings.Count(res, "/sensors/temp>"); n != sim.DefaultNodes {
		t.Fatalf("resource lookup lists %d nodes' /sensors/temp: %q", n, res)
	}
	get("GET by the registered name", reading.MatchString, "-m", "get", P+"/node1/sensors/temp")
	g.waitLog(t, "demo: node publishes", 30*time.Second)
	topics := get("topic discovery", func(o string) bool { return strings.Contains(o, "/ps/data/") },
		"-m", "get", P+"/.well-known/core?rt=core.ps.data")
	if !strings.Contains(topics, "core.ps.data") {
		t.Fatalf("discovery: %q", topics)
	}
	// The banner's console address serves the console, which lists the
	// nodes by the names they registered.
	api := regexp.MustCompile(`curl -s (http://127\.0\.0\.1:[0-9]+/api/v1/status)`).FindStringSubmatch(banner)
	if api == nil || !strings.Contains(banner, strings.TrimSuffix(api[1], "api/v1/status")+" in a browser") {
		t.Fatalf("the banner names no console:\n%s", banner)
	}
	resp, err := http.Get(api[1])
	if err != nil {
		t.Fatal(err)
	}
	var snap console.Snapshot
	err = json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if err != nil || len(snap.Radios) != 1 || snap.Radios[0].State != "up" || len(snap.Nodes) != sim.DefaultNodes {
		t.Fatalf("the demo's console: %v %+v", err, snap)
	}
	// The nodes' routes are their registrations, and the console names
	// them by the names they registered.
	for i, n := range snap.Nodes {
		if n.Name != fmt.Sprintf("node%d", i+1) {
			t.Fatalf("the console names node %d %q: %+v", i+1, n.Name, snap.Nodes)
		}
	}
	m := regexp.MustCompile(`-oscore (\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no client key file in the banner:\n%s", banner)
	}
	if _, err := os.Stat(m[1]); err != nil {
		t.Fatalf("the banner's client keys: %v", err)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the throwaway keys outlive the demo: %v", err)
	}
}

// A broker that creates the topic but names no topic-data resource makes
// createDemoTopic fail with an error, not return an empty path and nil.
func TestCreateDemoTopicNeedsTopicData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data := "/ps/data/abc"
	var withData atomic.Bool
	withData.Store(true)
	_, broker := endpoint(t, ctx, coap.HandlerFunc(func(_ context.Context, w coap.ResponseWriter, r *coap.Request) error {
		name, rt := demoTopic, pubsub.RTData
		props := pubsub.Properties{TopicName: &name, ResourceType: &rt}
		if withData.Load() {
			props.TopicData = &data
		}
		body, err := props.Encode()
		if err != nil {
			return err
		}
		return w.WriteResponse(&coap.Message{Code: coap.Created, Payload: body})
	}))
	client, _ := endpoint(t, ctx, nil)
	got, err := createDemoTopic(ctx, client, broker, 0)
	if err != nil || got != data {
		t.Fatalf("with topic-data: %q, %v; want %q", got, err, data)
	}
	withData.Store(false)
	got, err = createDemoTopic(ctx, client, broker, 0)
	if !errors.Is(err, errNoTopicData) || got != "" {
		t.Fatalf("without topic-data: %q, %v; want errNoTopicData", got, err)
	}
}

// endpoint is a CoAP endpoint on a loopback UDP socket; the broker's
// address when h is set.
func endpoint(t *testing.T, ctx context.Context, h coap.Handler) (*coap.Endpoint, netip.AddrPort) {
	t.Helper()
	u, err := coap.ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: h})
	t.Cleanup(func() { e.Close() })
	return e, u.LocalAddr()
}
