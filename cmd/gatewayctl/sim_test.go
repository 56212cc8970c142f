package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/bridge/bridgetest"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	_ "github.com/opaque-edge/gatewayd/radio/sim/nodekeys" // the nodes' keys: oscore_dir, sign_key
)

// The acceptance tests of end-to-end protection through the real daemon's
// proxy: gatewayctl at one end, a simulated radio node holding the keys at
// the other, and a gatewayd in between that was given none.

// startSimGateway runs gatewayd's proxy with a "sim" radio of one node
// configured with sc, and returns the proxy's URI, the node's URI prefix
// (coap://[addr]) and the node.
func startSimGateway(t *testing.T, sc sim.Config) (proxy, node string, n *sim.Node) {
	t.Helper()
	sc.Nodes = 1
	p := bridgetest.Start(t, func(c *bridge.Config) {
		c.Proxy.Timeout = bridge.Duration{Duration: 10 * time.Second}
		c.Metrics.Listen = ""
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim", Options: sc}}
	})
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	net, ok := sim.FromLink(r.Link())
	if !ok {
		t.Fatal("not a sim network")
	}
	n = net.SimNodes()[0]
	return "coap://" + p.Addrs()[0].String(), fmt.Sprintf("coap://[%v]", n.Addr()), n
}

var readingRE = regexp.MustCompile(`^[0-9]+\.[0-9]\n$`)

func TestOSCOREGetThroughGatewaydToSimNode(t *testing.T) {
	dir := t.TempDir()
	nodeDir := filepath.Join(dir, "nodes")
	if err := os.Mkdir(nodeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(dir, "client.toml")
	if code, _, stderr := ctl(t, "keys", "oscore", "-out", client, "-peer-out", filepath.Join(nodeDir, "node1.toml")); code != exitOK {
		t.Fatalf("keys oscore: exit %d: %s", code, stderr)
	}
	proxy, node, n := startSimGateway(t, sim.Config{OSCOREDir: nodeDir})

	// Twice: the second run must not reuse a sequence number, or the node
	// would answer 4.01 Replay detected.
	for i := range 2 {
		code, out, stderr := ctl(t, "get", "-v", "-oscore", client, "-proxy", proxy, node+"/oscore/temp")
		if code != exitOK || !readingRE.MatchString(out) || !strings.Contains(stderr, "oscore=true") {
			t.Fatalf("run %d: exit %d, stdout %q, stderr %q", i+1, code, out, stderr)
		}
	}
	// The resource is only served protected: in the clear the node says
	// 4.01, and so the client without the context learns nothing.
	code, out, stderr := ctl(t, "get", "-proxy", proxy, node+"/oscore/temp")
	if code != exitResponse || out != "" || !strings.Contains(stderr, "4.01") {
		t.Fatalf("unprotected: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// A context the node does not know gets §8.2's unprotected 4.01, which
	// gatewayctl marks as unprotected.
	other, _ := oscorePair(t)
	code, _, stderr = ctl(t, "get", "-oscore", other, "-proxy", proxy, node+"/oscore/temp")
	if code != exitResponse || !strings.Contains(stderr, "Security context not found") || !strings.Contains(stderr, "unprotected") {
		t.Fatalf("unknown context: exit %d, stderr %q", code, stderr)
	}
	if got := n.Requests(); got != 4 {
		t.Errorf("node served %d requests, want 4", got)
	}
}

func TestOSCOREObserveThroughGatewaydGetsProtectedNotifications(t *testing.T) {
	dir := t.TempDir()
	client := filepath.Join(dir, "client.toml")
	// One context file all nodes share: the demo's layout.
	if code, _, stderr := ctl(t, "keys", "oscore", "-out", client, "-peer-out", filepath.Join(dir, "nodes.toml")); code != exitOK {
		t.Fatalf("keys oscore: exit %d: %s", code, stderr)
	}
	proxy, node, n := startSimGateway(t, sim.Config{OSCOREDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	code, out, stderr := ctlCtx(t, ctx, "observe", "-n", "3", "-oscore", client, "-proxy", proxy, node+"/oscore/temp")
	lines := strings.SplitAfter(out, "\n")
	if code != exitOK || len(lines) != 4 || lines[3] != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for _, l := range lines[:3] {
		if !readingRE.MatchString(l) {
			t.Fatalf("not a reading: %q in %q", l, out)
		}
	}
	testutil.EventuallyWithin(t, 15*time.Second, "the node's observers gone after the client left", func() bool { return n.Observers() == 0 })
}

func TestSignedRepresentationTwoClientsOneNodeExchangeThroughGatewaydCache(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "node")
	if code, _, stderr := ctl(t, "keys", "ed25519", "-out", prefix); code != exitOK {
		t.Fatalf("keys ed25519: exit %d: %s", code, stderr)
	}
	proxy, node, n := startSimGateway(t, sim.Config{SignKey: prefix + ".key"})
	counterRE := regexp.MustCompile(`counter ([0-9]+)`)
	get := func() (out, counter string) {
		// Each run is a separate client with its own verifier.
		code, out, stderr := ctl(t, "get", "-v", "-verify", prefix+".pub", "-proxy", proxy, node+"/signed/temp")
		m := counterRE.FindStringSubmatch(stderr)
		if code != exitOK || !readingRE.MatchString(out) || m == nil {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		return out, m[1]
	}
	// The reading changes every sim.TempPeriod and the node's Max-Age says
	// so: if the cached entry expires between the two clients, the second
	// gets a newer representation from the node. Such a pair shows nothing
	// about the cache; take another.
	for attempt := 1; ; attempt++ {
		before := n.Requests()
		out1, c1 := get()
		out2, c2 := get()
		served := n.Requests() - before
		if served == 1 && out1 == out2 && c1 == c2 {
			return // the second client got the first one's bytes from the cache
		}
		if served == 1 || c1 == c2 || attempt == 3 {
			t.Fatalf("attempt %d: node served %d requests; readings %q %q, counters %s %s", attempt, served, out1, out2, c1, c2)
		}
	}
}

func TestObserveSignedThroughGatewaydVerifiesEveryNotification(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "node")
	if code, _, stderr := ctl(t, "keys", "ed25519", "-out", prefix); code != exitOK {
		t.Fatalf("keys ed25519: exit %d: %s", code, stderr)
	}
	proxy, node, _ := startSimGateway(t, sim.Config{SignKey: prefix + ".key"})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	code, out, stderr := ctlCtx(t, ctx, "observe", "-v", "-n", "3", "-verify", prefix+".pub", "-proxy", proxy, node+"/signed/temp")
	if code != exitOK || strings.Count(out, "\n") != 3 || strings.Count(stderr, "signed by kid") != 3 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for _, l := range strings.SplitAfter(out, "\n")[:3] {
		if !readingRE.MatchString(l) {
			t.Fatalf("not a reading: %q in %q", l, out)
		}
	}
}
