package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// hallGroup is a [[group]] only some simulated nodes join.
var hallGroup = netip.MustParseAddr("ff05::1:3")

// startGroupProxy runs a proxy with a simulated radio of n nodes that
// answer group requests within leisure; nodes 1 and 3 (numbered from 1)
// also join the group "hall". Loopback clients may send group requests.
func startGroupProxy(t *testing.T, n int, leisure time.Duration, mod func(*Config)) (*Proxy, *sim.Network) {
	t.Helper()
	hall := []int{1, 3}
	if n < 3 {
		hall = hall[:1]
	}
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Radio = []radio.Config{{Name: "wpan0", Driver: "sim", Options: sim.Config{
			Nodes: n, Leisure: radio.Duration{Duration: leisure},
			Groups: []sim.GroupConfig{{Address: hallGroup, Nodes: hall}},
		}}}
		c.Group = []GroupConfig{{Name: "hall", Radio: "wpan0", Address: hallGroup}}
		c.GroupComm.Clients = []string{"127.0.0.0/8"}
		c.GroupComm.Burst = 100
		if mod != nil {
			mod(c)
		}
	})
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	net, ok := sim.FromLink(r.Link())
	if !ok {
		t.Fatal("not a sim network")
	}
	return p, net
}

// groupClient is a client that, unlike a plain request-response client,
// takes every response with its request's token (draft-ietf-core-
// groupcomm-proxy §5.1.1 step 2): a UDP socket and the message codec.
type groupClient struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	mid  uint16
}

func newGroupClient(t *testing.T, p *Proxy) *groupClient {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &groupClient{t: t, conn: c, to: net.UDPAddrFromAddrPort(p.Addrs()[0]), mid: 0x100}
}

// send sends m as a CON with a fresh token, which it returns.
func (c *groupClient) send(m *coap.Message) []byte {
	c.t.Helper()
	out := *m
	if out.Type == 0 {
		out.Type = coap.Confirmable
	}
	out.Token = make([]byte, 8)
	rand.Read(out.Token)
	c.mid++
	out.MID = c.mid
	b, err := out.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteToUDP(b, c.to); err != nil {
		c.t.Fatal(err)
	}
	return out.Token
}

// responses reads until n responses with token have come, or wait has
// passed; it acknowledges CON responses and skips empty ACKs.
func (c *groupClient) responses(tok []byte, n int, wait time.Duration) []*coap.Message {
	c.t.Helper()
	var got []*coap.Message
	deadline := time.Now().Add(wait)
	buf := make([]byte, 2048)
	for len(got) < n {
		c.conn.SetReadDeadline(deadline)
		k, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		var m coap.Message
		if err := m.Decode(buf[:k]); err != nil {
			c.t.Fatalf("undecodable datagram from the proxy: %v", err)
		}
		if m.Type == coap.Confirmable {
			ack := coap.Message{Type: coap.Acknowledgement, MID: m.MID}
			b, _ := ack.Marshal()
			c.conn.WriteToUDP(b, c.to)
		}
		if m.Code == coap.Empty {
			continue
		}
		if !bytes.Equal(m.Token, tok) {
			c.t.Fatalf("a response with token %x, want %x", m.Token, tok)
		}
		got = append(got, m.Clone())
	}
	return got
}

// multicastTimeout is the option with a value in seconds.
func multicastTimeout(opts coap.Options, seconds uint32) coap.Options {
	return opts.Insert(DefaultMulticastTimeoutOption, coap.EncodeUint(seconds))
}

// replyFromAddr decodes a Reply-From value with an independent CBOR
// decoder: a sequence of one CRI [scheme, [host, port]] (§3).
func replyFromAddr(t *testing.T, m *coap.Message) netip.AddrPort {
	t.Helper()
	v, ok := m.Options.Get(DefaultReplyFromOption)
	if !ok {
		t.Fatalf("response without Reply-From: %v", m)
	}
	var cri []any
	rest, err := cbor.UnmarshalFirst(v, &cri)
	if err != nil || len(rest) != 0 || len(cri) != 2 {
		t.Fatalf("Reply-From %x: %v, %d bytes after the CRI, %d elements", v, err, len(rest), len(cri))
	}
	auth, ok := cri[1].([]any)
	if scheme, _ := cri[0].(int64); scheme != -1 || !ok || len(auth) != 2 {
		t.Fatalf("Reply-From %x: CRI %v: want [-1 (coap), [host, port]]", v, cri)
	}
	host, _ := auth[0].([]byte)
	port, _ := auth[1].(uint64)
	a, ok := netip.AddrFromSlice(host)
	if !ok {
		t.Fatalf("Reply-From %x: host %v", v, auth[0])
	}
	return netip.AddrPortFrom(a, uint16(port))
}

func groupGET(uri string, seconds uint32) *coap.Message {
	return &coap.Message{Code: coap.GET, Options: multicastTimeout(proxyURI(uri), seconds)}
}

func TestGroupGETRelaysEveryNodesAnswerWithReplyFrom(t *testing.T) {
	p, n := startGroupProxy(t, 5, 200*time.Millisecond, nil)
	c := newGroupClient(t, p)
	frames := n.Air().Stats().Frames
	tok := c.send(groupGET("coap://[ff03::fd]/sensors/temp", 10))
	got := c.responses(tok, len(n.Nodes()), 20*time.Second)
	if len(got) != len(n.Nodes()) {
		t.Fatalf("%d responses, want one from each of %d nodes", len(got), len(n.Nodes()))
	}
	var from []netip.Addr
	for _, m := range got {
		a := replyFromAddr(t, m)
		if m.Code != coap.Content || a.Port() != 5683 {
			t.Fatalf("response %v from %v", m, a)
		}
		i := slices.Index(n.Nodes(), a.Addr())
		if i < 0 {
			t.Fatalf("Reply-From %v names no node", a)
		}
		if want := n.SimNodes()[i].Reading(); string(m.Payload) != want && len(m.Payload) != len(want) {
			t.Fatalf("node %v answered %q, its reading is %q", a, m.Payload, want)
		}
		from = append(from, a.Addr())
	}
	slices.SortFunc(from, netip.Addr.Compare)
	if want := slices.SortedFunc(slices.Values(n.Nodes()), netip.Addr.Compare); !slices.Equal(from, want) {
		t.Fatalf("answers from %v, want %v", from, want)
	}
	// One request frame, one response frame per node.
	if d := n.Air().Stats().Frames - frames; d != uint64(1+len(n.Nodes())) {
		t.Fatalf("%d frames on the air, want 1 + %d", d, len(n.Nodes()))
	}
	for _, node := range n.SimNodes() {
		if node.GroupRequests() != 1 {
			t.Fatalf("node %v saw %d group requests", node.Addr(), node.GroupRequests())
		}
	}
	// Counted once each, after it went: the count may trail the client.
	waitCounter(t, p.groupm.responses.WithLabelValues(groupRelayed), float64(len(n.Nodes())))
	if v := counterValue(p.groupm.responses.WithLabelValues(groupRelayed)); v != float64(len(n.Nodes())) {
		t.Fatalf("relayed counter %v", v)
	}
}

func TestGroupPUTByNameReachesTheGroupsNodesOnly(t *testing.T) {
	p, n := startGroupProxy(t, 4, 100*time.Millisecond, nil)
	c := newGroupClient(t, p)
	put := &coap.Message{Code: coap.PUT, Options: multicastTimeout(proxyURI("coap://hall/actuators/valve"), 10), Payload: []byte("open")}
	tok := c.send(put)
	got := c.responses(tok, 2, 20*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d responses from the hall group, want 2", len(got))
	}
	want := map[netip.Addr]bool{n.Nodes()[0]: true, n.Nodes()[2]: true}
	for _, m := range got {
		if a := replyFromAddr(t, m); m.Code != coap.Changed || !want[a.Addr()] {
			t.Fatalf("%v from %v", m.Code, a)
		}
	}
	for i, node := range n.SimNodes() {
		if v := node.Valve(); (v == "open") != (i == 0 || i == 2) {
			t.Fatalf("node %d: valve %q", i+1, v)
		}
	}
	// The whole network, by All CoAP Nodes: every valve.
	tok = c.send(&coap.Message{Code: coap.PUT, Options: multicastTimeout(proxyURI("coap://[ff05::fd]/actuators/valve"), 10), Payload: []byte("open")})
	if got := c.responses(tok, len(n.Nodes()), 20*time.Second); len(got) != len(n.Nodes()) {
		t.Fatalf("%d responses to the PUT to ff05::fd", len(got))
	}
	for i, node := range n.SimNodes() {
		if v := node.Valve(); v != "open" {
			t.Fatalf("node %d: valve %q", i+1, v)
		}
	}
}

func TestGroupRequestRefusals(t *testing.T) {
	p, n := startGroupProxy(t, 2, 0, func(c *Config) {
		c.GroupComm.Burst = 1
		c.GroupComm.Rate = 0.001
	})
	c := client(t)
	// §5.2.1 step 3: 4.00 with an empty Multicast-Timeout.
	resp := do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI("coap://[ff03::fd]/sensors/temp")})
	v, ok := resp.Options.Get(DefaultMulticastTimeoutOption)
	if resp.Code != coap.BadRequest || !ok || len(v) != 0 {
		t.Fatalf("without Multicast-Timeout: %v, option %x %v", resp.Code, v, ok)
	}
	// Wider than a site: not the radios'.
	if resp := do(t, c, p, groupGET("coap://[ff0e::fd]/sensors/temp", 5)); resp.Code != coap.ProxyingNotSupported {
		t.Fatalf("global scope group: %v", resp.Code)
	}
	// The per-client rate: one, then 4.29.
	if tok := newGroupClient(t, p).send(groupGET("coap://[ff03::fd]/sensors/temp", 0)); len(tok) == 0 {
		t.Fatal("no token")
	}
	waitCounter(t, p.groupm.requests.WithLabelValues(groupSent), 1)
	if resp := do(t, c, p, groupGET("coap://[ff03::fd]/sensors/temp", 5)); resp.Code != coap.TooManyRequests {
		t.Fatalf("past the rate: %v", resp.Code)
	}
	// The sent count may lead the radio's delivery to the nodes.
	for _, node := range n.SimNodes() {
		testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("node %v to get the group request", node.Addr()), func() bool { return node.GroupRequests() > 0 })
		if node.GroupRequests() != 1 {
			t.Fatalf("node %v saw %d group requests, want the one allowed", node.Addr(), node.GroupRequests())
		}
	}
}

func TestGroupRequestOnlyFromGroupClientsAndVerifiedAddresses(t *testing.T) {
	p, n := startGroupProxy(t, 2, 0, func(c *Config) {
		c.GroupComm.Clients = []string{"127.0.0.2/32"}
		c.Proxy.Verified = []string{"127.0.0.2/32"}
	})
	// §5.2.1 step 2: 4.01 for a client not allowed group requests.
	if resp := do(t, client(t), p, groupGET("coap://[ff03::fd]/sensors/temp", 5)); resp.Code != coap.Unauthorized {
		t.Fatalf("from a client without group rights: %v", resp.Code)
	}
	if v := counterValue(p.groupm.requests.WithLabelValues(groupUnauthorized)); v != 1 {
		t.Fatalf("unauthorized counter %v", v)
	}
	// Allowed but not verified: the Echo challenge (RFC 9175 §2.4).
	p.Reload(func() Config {
		cfg := p.chain.Load().cfg
		cfg.GroupComm.Clients = []string{"127.0.0.0/8"}
		return cfg
	}())
	resp := do(t, client(t), p, groupGET("coap://[ff03::fd]/sensors/temp", 5))
	if _, echo := resp.Options.Get(coap.Echo); resp.Code != coap.Unauthorized || !echo {
		t.Fatalf("from an unverified address: %v, Echo %v", resp.Code, echo)
	}
	for _, node := range n.SimNodes() {
		if node.GroupRequests() != 0 {
			t.Fatalf("node %v saw a group request", node.Addr())
		}
	}
	if v := counterValue(p.groupm.requests.WithLabelValues(groupChallenged)); v != 1 {
		t.Fatalf("challenged counter %v", v)
	}
}

func TestGroupResponsesAfterTheTimeoutAreDroppedAndCounted(t *testing.T) {
	p, n := startGroupProxy(t, 3, 50*time.Millisecond, nil)
	c := newGroupClient(t, p)
	// T' = 0: the client wants none (§5.2.1 step 6); every answer is late.
	tok := c.send(groupGET("coap://[ff03::fd]/sensors/temp", 0))
	waitCounter(t, p.groupm.responses.WithLabelValues(groupLate), float64(len(n.Nodes())))
	if got := c.responses(tok, 1, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("late responses relayed: %v", got)
	}
	if v := counterValue(p.groupm.responses.WithLabelValues(groupRelayed)); v != 0 {
		t.Fatalf("relayed counter %v", v)
	}
}

// waitCounter waits for a counter to reach want.
func waitCounter(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("the counter to reach %v", want), func() bool { return counterValue(c) >= want })
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestGroupOSCOREPassesUntouched sends a Group OSCORE request (group mode,
// draft-ietf-core-oscore-groupcomm §4: the Group Flag, 0x20, with a kid
// context and a kid) through the proxy to a group: every node receives
// the OSCORE option and the protected payload byte for byte, and outer
// options changed only as the guard allows.
func TestGroupOSCOREPassesUntouched(t *testing.T) {
	p, n := startGroupProxy(t, 3, 0, nil)
	// Flags: Group Flag 0x20, h (kid context) 0x10, k (kid) 0x08, n = 1;
	// Partial IV 0x05; kid context 4 bytes; kid 0x42 (RFC 8613 §6.1).
	oscoreOpt := []byte{0x39, 0x05, 0x04, 0xde, 0xad, 0xbe, 0xef, 0x42}
	if oscoreOpt[0]&0x20 == 0 {
		t.Fatal("the constructed message lacks the Group Flag")
	}
	// Ciphertext and countersignature stand-ins: bytes no node can read.
	protected := make([]byte, 96)
	rand.Read(protected)
	req := &coap.Message{Code: coap.POST, Payload: protected,
		Options: multicastTimeout(proxyURI("coap://[ff05::fd]"), 2).Insert(coap.OSCORE, oscoreOpt)}
	c := newGroupClient(t, p)
	c.send(req)
	waitCounter(t, p.groupm.requests.WithLabelValues(groupSent), 1)
	for _, node := range n.SimNodes() {
		testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("node %v to get the group request", node.Addr()), func() bool { return node.GroupRequests() > 0 })
		var got coap.Message
		if err := got.Decode(node.LastGroupRequest()); err != nil {
			t.Fatal(err)
		}
		if v, _ := got.Options.Get(coap.OSCORE); !bytes.Equal(v, oscoreOpt) || !bytes.Equal(got.Payload, protected) || got.Code != coap.POST {
			t.Fatalf("node %v got OSCORE %x, %d payload bytes (equal %v), %v", node.Addr(), v, len(got.Payload), bytes.Equal(got.Payload, protected), got.Code)
		}
		if got.Type != coap.NonConfirmable || got.Options.Has(DefaultMulticastTimeoutOption) || got.Options.Has(coap.ProxyURI) {
			t.Fatalf("node %v got %v with options %v", node.Addr(), got.Type, got.Options)
		}
		// Only what PR1.1 and Hop-Limit allow differs from the request.
		in := *req
		in.Options = append(coap.Options(nil), req.Options...).Remove(DefaultMulticastTimeoutOption)
		if err := Verify(&in, &got); err != nil {
			t.Fatal(err)
		}
	}
}

// sendWith sends m as a CON with the given token.
func (c *groupClient) sendWith(m *coap.Message, tok []byte) {
	c.t.Helper()
	out := *m
	out.Type, out.Token = coap.Confirmable, tok
	c.mid++
	out.MID = c.mid
	b, err := out.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteToUDP(b, c.to); err != nil {
		c.t.Fatal(err)
	}
}

// waitObservers waits for every node to have n observations.
func waitObservers(t *testing.T, n *sim.Network, want int) {
	t.Helper()
	for _, node := range n.SimNodes() {
		testutil.EventuallyWithin(t, 20*time.Second, fmt.Sprintf("node %v to have %d observations", node.Addr(), want), func() bool { return node.Observers() == want })
	}
}

// TestGroupObserveRelaysEveryNodesNotificationsUntilCancelled registers
// an observation with a group (groupcomm-bis §3.7) through the proxy:
// every node's notifications come with Reply-From past Multicast-Timeout;
// the client's deregistration reaches every node, and so does the end of
// an observation whose notification the client rejected.
func TestGroupObserveRelaysEveryNodesNotificationsUntilCancelled(t *testing.T) {
	p, n := startGroupProxy(t, 3, 100*time.Millisecond, nil)
	c := newGroupClient(t, p)
	reg := groupGET("coap://[ff03::fd]/sensors/temp", 1)
	reg.Options = reg.Options.SetUint(coap.Observe, 0)
	tok := c.send(reg)
	// Each node's first response and a notification (TempPeriod, 3 s,
	// after the 1 s Multicast-Timeout).
	per := map[netip.Addr]int{}
	for done := 0; done < len(n.Nodes()); {
		got := c.responses(tok, 1, 20*time.Second)
		if len(got) == 0 {
			t.Fatalf("notifications so far: %v", per)
		}
		if !got[0].Options.Has(coap.Observe) || got[0].Code != coap.Content {
			t.Fatalf("not a notification: %v", got[0])
		}
		a := replyFromAddr(t, got[0]).Addr()
		if per[a]++; per[a] == 2 {
			done++
		}
	}
	waitObservers(t, n, 1)
	// The client deregisters: every node hears of it and answers.
	dereg := groupGET("coap://[ff03::fd]/sensors/temp", 5)
	dereg.Options = dereg.Options.SetUint(coap.Observe, 1)
	c.sendWith(dereg, tok)
	waitObservers(t, n, 0)
	from := map[netip.Addr]bool{}
	for len(from) < len(n.Nodes()) {
		got := c.responses(tok, 1, 20*time.Second)
		if len(got) == 0 {
			t.Fatalf("answers to the deregistration from %v only", from)
		}
		if !got[0].Options.Has(coap.Observe) {
			from[replyFromAddr(t, got[0]).Addr()] = true
		}
	}

	// Again; this time the client rejects a notification with RST.
	tok = c.send(reg)
	waitObservers(t, n, 1)
	buf := make([]byte, 2048)
	for {
		c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		k, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no notification to reject: %v", err)
		}
		var m coap.Message
		if m.Decode(buf[:k]) != nil || !bytes.Equal(m.Token, tok) || m.Type == coap.Acknowledgement {
			continue
		}
		rst := coap.Message{Type: coap.Reset, MID: m.MID}
		b, _ := rst.Marshal()
		c.conn.WriteToUDP(b, c.to)
		break
	}
	late := counterValue(p.groupm.responses.WithLabelValues(groupLate))
	waitObservers(t, n, 0)
	// The proxy deregistered at once: the nodes did not each have to send
	// one more notification to be told by an RST (RFC 7641 §3.6).
	if v := counterValue(p.groupm.responses.WithLabelValues(groupLate)); v >= late+float64(len(n.Nodes())) {
		t.Fatalf("%v late notifications after the client left: the nodes were not deregistered", v-late)
	}
}

// TestGroupGETReachesFiftyNodesInOneFrame runs the simulator at 50 nodes
// on one radio: one broadcast frame out, every node's answer back.
func TestGroupGETReachesFiftyNodesInOneFrame(t *testing.T) {
	p, n := startGroupProxy(t, 50, time.Second, nil)
	c := newGroupClient(t, p)
	frames := n.Air().Stats().Frames
	tok := c.send(groupGET("coap://[ff05::fd]/sensors/temp", 30))
	got := c.responses(tok, 50, 40*time.Second)
	seen := map[netip.Addr]bool{}
	for _, m := range got {
		seen[replyFromAddr(t, m).Addr()] = true
	}
	if len(seen) != 50 {
		t.Fatalf("answers from %d distinct nodes of 50 (%d responses)", len(seen), len(got))
	}
	if d := n.Air().Stats().Frames - frames; d != 51 {
		t.Fatalf("%d frames on the air, want 1 + 50", d)
	}
}
