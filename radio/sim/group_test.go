package sim_test

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// groupResponses sends a group request from the client node to group and
// collects responses until want have come or the deadline passes.
func groupResponses(t *testing.T, client *sim.Node, group netip.Addr, req *coap.Message, want int, wait time.Duration) map[netip.Addr]*coap.Message {
	t.Helper()
	var mu sync.Mutex
	got := map[netip.Addr]*coap.Message{}
	enough := make(chan struct{})
	g, err := client.Endpoint().Group(netip.AddrPortFrom(group, 5683), req, func(from netip.AddrPort, resp *coap.Message) {
		mu.Lock()
		defer mu.Unlock()
		got[from.Addr()] = resp
		if len(got) == want {
			close(enough)
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	select {
	case <-enough:
	case <-time.After(wait):
	}
	mu.Lock()
	defer mu.Unlock()
	return maps(got)
}

func maps(m map[netip.Addr]*coap.Message) map[netip.Addr]*coap.Message {
	out := make(map[netip.Addr]*coap.Message, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func pathReq(code coap.Code, path string, payload []byte) *coap.Message {
	m := &coap.Message{Code: code, Payload: payload}
	for _, seg := range []string{"actuators", "valve"} {
		if path == "/actuators/valve" {
			m.Options = m.Options.Insert(coap.URIPath, []byte(seg))
		}
	}
	if path != "/actuators/valve" {
		m.Options = m.Options.Insert(coap.URIPath, []byte(path[1:]))
	}
	return m
}

func TestNodesAnswerGroupRequestsOfGroupsTheyJoined(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa), Groups: []netip.Addr{netip.MustParseAddr("ff05::aa")}})
	hall := netip.MustParseAddr("ff05::1:3")
	var nodes []*sim.Node
	for i := range 5 {
		groups := slices.Clone(sim.AllCoAPNodes)
		if i < 2 {
			groups = append(groups, hall)
		}
		nodes = append(nodes, newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(i), Groups: groups, Leisure: 50 * time.Millisecond}))
	}
	got := groupResponses(t, client, netip.MustParseAddr("ff03::fd"), pathReq(coap.GET, "/actuators/valve", nil), len(nodes), 20*time.Second)
	if len(got) != len(nodes) {
		t.Fatalf("%d answers to ff03::fd, want %d: %v", len(got), len(nodes), got)
	}
	for _, n := range nodes {
		if m := got[n.Addr()]; m == nil || m.Code != coap.Content || string(m.Payload) != "closed" || m.Type != coap.NonConfirmable {
			t.Fatalf("node %v answered %v", n.Addr(), m)
		}
	}
	// A group only some joined: the others do not even see it.
	got = groupResponses(t, client, hall, pathReq(coap.PUT, "/actuators/valve", []byte("open")), 2, 20*time.Second)
	if len(got) != 2 || got[nodes[0].Addr()] == nil || got[nodes[1].Addr()] == nil {
		t.Fatalf("answers to %v: %v", hall, got)
	}
	for i, n := range nodes {
		want := "closed"
		if i < 2 {
			want = "open"
		}
		if n.Valve() != want || (i < 2) != (n.GroupRequests() == 2) {
			t.Fatalf("node %d: valve %q, %d group requests", i, n.Valve(), n.GroupRequests())
		}
	}
}

func TestNodesSuppressGroupErrorsAndHonourNoResponse(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	var nodes []*sim.Node
	for i := range 3 {
		nodes = append(nodes, newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(i)}))
	}
	all := netip.MustParseAddr("ff05::fd")
	wait := func(n int) {
		t.Helper()
		for _, node := range nodes {
			testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("node %v to see %d group requests", node.Addr(), n), func() bool { return node.GroupRequests() >= uint64(n) })
		}
	}
	// A 4.04 to a group request is left out (groupcomm-bis §3.1.2).
	var mu sync.Mutex
	var answers []*coap.Message
	collect := func(_ netip.AddrPort, m *coap.Message) {
		mu.Lock()
		answers = append(answers, m)
		mu.Unlock()
	}
	g, err := client.Endpoint().Group(netip.AddrPortFrom(all, 5683), pathReq(coap.GET, "/nothing", nil), collect, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(1)
	// No-Response 2 (RFC 7967): no 2.xx, the PUT is carried out.
	put := pathReq(coap.PUT, "/actuators/valve", []byte("open"))
	put.Options = put.Options.SetUint(coap.NoResponse, 2)
	g2, err := client.Endpoint().Group(netip.AddrPortFrom(all, 5683), put, collect, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(2)
	// No-Response 0 asks for every response, errors included: they come,
	// and, coming after the two above were served, show that nothing
	// else was on its way.
	nf := pathReq(coap.GET, "/nothing", nil)
	nf.Options = nf.Options.SetUint(coap.NoResponse, 0)
	got := groupResponses(t, client, all, nf, len(nodes), 20*time.Second)
	g.Stop()
	g2.Stop()
	if len(got) != len(nodes) {
		t.Fatalf("No-Response 0: %d answers, want %d", len(got), len(nodes))
	}
	for _, m := range got {
		if m.Code != coap.NotFound {
			t.Fatalf("No-Response 0: %v", m.Code)
		}
	}
	for _, n := range nodes {
		if n.Valve() != "open" {
			t.Fatalf("node %v: valve %q after a PUT with No-Response", n.Addr(), n.Valve())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(answers) != 0 {
		t.Fatalf("suppressed answers came: %v", answers)
	}
}

func TestNodeHonoursNoResponseToUnicast(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	server := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(0)})
	req := pathReq(coap.PUT, "/actuators/valve", []byte("open"))
	req.Type = coap.NonConfirmable
	req.Options = req.Options.SetUint(coap.NoResponse, 2)
	answered := make(chan *coap.Message, 1)
	client.Endpoint().Go(netip.AddrPortFrom(server.Addr(), 5683), req, time.Minute, func(m *coap.Message, err error) {
		answered <- m
	})
	// Two exchanges after it: the node has served the PUT, and any
	// answer to it has come.
	deadline := time.Now().Add(20 * time.Second)
	for string(get(t, client, server.Addr(), coap.GET, "/actuators/valve", nil).Payload) != "open" {
		if time.Now().After(deadline) {
			t.Fatal("the PUT never changed the valve")
		}
	}
	get(t, client, server.Addr(), coap.GET, "/actuators/valve", nil)
	select {
	case m := <-answered:
		t.Fatalf("a response despite No-Response 2: %v", m)
	default:
	}
}
