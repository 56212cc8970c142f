package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/bridge/bridgetest"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// TestGroupPrintsEveryNodesAnswer has gatewayctl group send a group GET
// and a group PUT through gatewayd to a simulated radio's three nodes:
// it prints one line per node, naming it, and the PUT changes every
// valve.
func TestGroupPrintsEveryNodesAnswer(t *testing.T) {
	p := bridgetest.Start(t, func(c *bridge.Config) {
		c.Metrics.Listen = ""
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim", Options: sim.Config{Nodes: 3, Leisure: radio.Duration{Duration: 100 * time.Millisecond}}}}
		c.GroupComm.Clients = []string{"127.0.0.0/8"}
	})
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	n, _ := sim.FromLink(r.Link())
	proxy := "coap://" + p.Addrs()[0].String()
	line := regexp.MustCompile(`^\+[0-9]+ms coap://\[([0-9a-f:]+)\]:5683 2\.0[45] ?(.*)$`)
	for _, c := range []struct {
		args []string
		want func(string) bool
	}{
		{[]string{"-t", "2", "coap://[ff05::fd]/sensors/temp"}, regexp.MustCompile(`^[0-9]+\.[0-9]$`).MatchString},
		{[]string{"-t", "2", "-m", "put", "-e", "open", "coap://[ff03::fd]/actuators/valve"}, func(s string) bool { return s == "" }},
	} {
		code, stdout, stderr := ctl(t, append([]string{"group", "-proxy", proxy}, c.args...)...)
		if code != exitOK {
			t.Fatalf("group %v: exit %d: %s", c.args, code, stderr)
		}
		var from []string
		for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil || !c.want(m[2]) {
				t.Fatalf("group %v: line %q", c.args, l)
			}
			from = append(from, m[1])
		}
		slices.Sort(from)
		var want []string
		for _, a := range n.Nodes() {
			want = append(want, a.String())
		}
		slices.Sort(want)
		if !slices.Equal(from, want) {
			t.Fatalf("group %v: answers from %v, want %v\n%s", c.args, from, want, stdout)
		}
		if !strings.Contains(stderr, fmt.Sprintf("%d responses", len(want))) {
			t.Fatalf("group %v: stderr %q", c.args, stderr)
		}
	}
	for _, node := range n.SimNodes() {
		if node.Valve() != "open" {
			t.Fatalf("node %v: valve %q", node.Addr(), node.Valve())
		}
	}
	// With another Multicast-Timeout number than the proxy's: its 4.00,
	// exit 1 (draft-ietf-core-groupcomm-proxy §5.2.1 step 3).
	code, _, stderr := ctl(t, "group", "-proxy", proxy, "-mt-option", "65006", "coap://[ff05::fd]/sensors/temp")
	if code != exitResponse || !strings.Contains(stderr, "4.00") {
		t.Fatalf("without the proxy's Multicast-Timeout: exit %d: %s", code, stderr)
	}
}
