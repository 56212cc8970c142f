package bridge

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

// ampPeer is a client on a loopback address of its own (127.0.0.x):
// verification is by address, so clients that must stay apart need
// addresses apart. It counts the UDP payload bytes it sends and receives.
type ampPeer struct {
	t       *testing.T
	c       *net.UDPConn
	out, in int
	mid     uint16
}

func newAmpPeer(t *testing.T, host byte) *ampPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, host)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ampPeer{t: t, c: c, mid: uint16(host) << 8}
}

func (a *ampPeer) addr() netip.AddrPort { return netip.MustParseAddrPort(a.c.LocalAddr().String()) }

// send sends m with a fresh message ID and counts its bytes.
func (a *ampPeer) send(m *coap.Message, to netip.AddrPort) {
	a.t.Helper()
	a.mid++
	m.MID = a.mid
	b, err := m.Marshal()
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.c.WriteToUDPAddrPort(b, to); err != nil {
		a.t.Fatal(err)
	}
	a.out += len(b)
}

// recv returns the next datagram, counted; it fails the test after 10 s.
func (a *ampPeer) recv() *coap.Message {
	a.t.Helper()
	buf := make([]byte, 65536)
	a.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := a.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		a.t.Fatalf("nothing received: %v", err)
	}
	a.in += n
	var m coap.Message
	if err := m.Decode(buf[:n]); err != nil {
		a.t.Fatal(err)
	}
	return m.Clone()
}

// exchange sends m and returns the next datagram with m's token.
func (a *ampPeer) exchange(m *coap.Message, to netip.AddrPort) *coap.Message {
	a.t.Helper()
	a.send(m, to)
	for {
		if r := a.recv(); bytes.Equal(r.Token, m.Token) {
			return r
		}
	}
}

// unverified makes loopback clients unverified: [proxy] verified empty.
func unverified(c *Config) { c.Proxy.Verified = nil }

func wkcRequest(tok string) *coap.Message {
	return &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Token: []byte(tok), Options: pathOpts(".well-known/core")}
}

// mustFit fails the test when resp, the answer to req, is more than
// three times req's size.
func mustFit(t *testing.T, what string, req, resp *coap.Message) {
	t.Helper()
	in, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 3*len(in) {
		t.Fatalf("%s: %d bytes answer %d: %.1f×, over 3×", what, len(out), len(in), float64(len(out))/float64(len(in)))
	}
}

// bigOrigin is an origin whose /big is a cacheable representation of n
// bytes; it counts the requests it gets.
func bigOrigin(t *testing.T, n int) (*recorder, string) {
	body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	o := newRecorder(t, func(*coap.Message) *coap.Message {
		m := &coap.Message{Code: coap.Content, Payload: body}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 60)
		return m
	})
	return o, "coap://" + o.addr.String() + "/big"
}

// An Echo value verifies the address it was made for, within
// echo_lifetime, and nothing else; the table of verified addresses
// forgets them after verified_for and holds at most max_verified.
func TestEchoValuesAreBoundToAddressAndTime(t *testing.T) {
	cfg := Defaults().Proxy
	cfg.MaxVerified = 2
	v := newVerifier(cfg)
	now := time.Unix(1_700_000_000, 0)
	v.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	val := v.echo(a)
	if len(val) != echoLen {
		t.Fatalf("Echo value of %d bytes, want %d", len(val), echoLen)
	}
	for _, tc := range []struct {
		name        string
		val         []byte
		from        netip.Addr
		after       time.Duration
		ours, fresh bool
	}{
		{"same address at once", val, a, 0, true, true},
		{"IPv4-mapped form of the address", val, netip.MustParseAddr("::ffff:192.0.2.1"), 0, true, true},
		{"within echo_lifetime", val, a, cfg.EchoLifetime.Duration - time.Second, true, true},
		{"after echo_lifetime", val, a, cfg.EchoLifetime.Duration, true, false},
		{"another address", val, b, 0, false, false},
		{"one bit changed", append(append([]byte(nil), val[:11]...), val[11]^1), a, 0, false, false},
		{"a later timestamp with the old MAC", append([]byte{val[0], val[1], val[2], val[3] + 1}, val[4:]...), a, 0, false, false},
		{"too short", val[:8], a, 0, false, false},
	} {
		now = time.Unix(1_700_000_000, 0).Add(tc.after)
		if ours, fresh := v.check(tc.val, tc.from); ours != tc.ours || fresh != tc.fresh {
			t.Errorf("%s: ours %v fresh %v, want %v %v", tc.name, ours, fresh, tc.ours, tc.fresh)
		}
	}
	now = time.Unix(1_700_000_000, 0)
	c := netip.MustParseAddr("192.0.2.3")
	for _, x := range []netip.Addr{a, b, c} {
		v.verify(x)
	}
	if v.has(a) || !v.has(b) || !v.has(c) || v.count() != 2 {
		t.Fatalf("with max_verified 2: a %v b %v c %v count %d; want the oldest (a) forgotten", v.has(a), v.has(b), v.has(c), v.count())
	}
	now = now.Add(cfg.VerifiedFor.Duration + time.Second)
	if v.has(b) {
		t.Fatal("still verified after verified_for")
	}
}

// /.well-known/core with a thousand routes, asked for by an unverified
// client, is a first block of at most three times the request, with an
// ETag and an Echo value; the client that sends the value back with its
// next block request is verified, and the blocks put together are the
// listing a verified client gets.
func TestWellKnownCoreToUnverifiedClientIsASmallFirstBlockWithEcho(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		unverified(c)
		for i := range 1000 {
			c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("route-%04d-%s", i, strings.Repeat("x", 28)), Target: "coap://127.0.0.1:9/"})
		}
	})
	a := newAmpPeer(t, 2)
	req := wkcRequest("")
	first := a.exchange(req, p.Addrs()[0])
	mustFit(t, "first block", req, first)
	blk, ok, err := blockwise.Get(first.Options, coap.Block2)
	if err != nil || !ok || blk.Num != 0 || !blk.More || len(first.Payload) != blk.Size() {
		t.Fatalf("first answer %v, Block2 %+v %v: want block 0 of a block-wise answer", first, blk, err)
	}
	etag, hasETag := first.Options.Get(coap.ETag)
	echo, hasEcho := first.Options.Get(coap.Echo)
	size2, _ := first.Options.Uint(coap.Size2)
	if !hasETag || !hasEcho || size2 < 50000 {
		t.Fatalf("first block: ETag %v Echo %v Size2 %d", hasETag, hasEcho, size2)
	}
	if p.amp.has(netip.MustParseAddr("127.0.0.2")) {
		t.Fatal("verified by a request alone")
	}
	// The next block, with the Echo value: the client is verified.
	next := wkcRequest("n")
	next.Options = next.Options.Set(coap.Block2, blockwise.Block{Num: 1, SZX: blk.SZX}.Value()).Set(coap.Echo, echo)
	second := a.exchange(next, p.Addrs()[0])
	if b2, _, _ := blockwise.Get(second.Options, coap.Block2); b2.Num != 1 || b2.SZX != blk.SZX {
		t.Fatalf("second block %+v, want block 1 of the size of the first", b2)
	}
	if tag, _ := second.Options.Get(coap.ETag); !bytes.Equal(tag, etag) {
		t.Fatal("the ETag changed between blocks of an unchanged listing")
	}
	if !p.amp.has(netip.MustParseAddr("127.0.0.2")) || p.amp.Stats().EchoVerified != 1 {
		t.Fatalf("not verified by its Echo value: %+v", p.amp.Stats())
	}
	// Now verified, it asks for 1024-byte blocks, and gets the whole.
	whole := fetchBlocks(t, a, p, wkcRequest("w"))
	want := make([]string, 0, 1000)
	for i := range 1000 {
		want = append(want, fmt.Sprintf(`</route-%04d-%s>;title="route"`, i, strings.Repeat("x", 28)))
	}
	if string(whole) != strings.Join(want, ",") {
		t.Fatalf("the listing put together from blocks is %d bytes, not the %d of the routes", len(whole), len(strings.Join(want, ",")))
	}
	if st := p.amp.Stats(); st.Blocks == 0 {
		t.Fatalf("stats %+v: the cut block is not counted", st)
	}
}

// fetchBlocks gets a representation block by block (RFC 7959 §2.4) with
// 1024-byte blocks and checks the ETag stays.
func fetchBlocks(t *testing.T, a *ampPeer, p *Proxy, req *coap.Message) []byte {
	t.Helper()
	var body, etag []byte
	for num := uint32(0); ; num++ {
		m := *req
		m.Token = []byte(fmt.Sprintf("b%d", num))
		m.Options = append(coap.Options(nil), req.Options...).Set(coap.Block2, blockwise.Block{Num: num, SZX: 6}.Value())
		resp := a.exchange(&m, p.Addrs()[0])
		if resp.Code != coap.Content {
			t.Fatalf("block %d: %v %q", num, resp.Code, resp.Payload)
		}
		blk, ok, err := blockwise.Get(resp.Options, coap.Block2)
		if !ok || err != nil {
			if num == 0 {
				return resp.Payload // one block: no Block2
			}
			t.Fatalf("block %d without Block2", num)
		}
		tag, _ := resp.Options.Get(coap.ETag)
		if num == 0 {
			etag = tag
		} else if !bytes.Equal(tag, etag) {
			t.Fatalf("block %d: ETag %x, the first had %x", num, tag, etag)
		}
		if blk.Num != num || blk.SZX != 6 {
			t.Fatalf("block %d: got %+v", num, blk)
		}
		body = append(body, resp.Payload...)
		if !blk.More {
			return body
		}
	}
}

// A verified client (loopback, by default) gets /.well-known/core in
// 1024-byte blocks when it is larger, and as it is when it is not; it can
// ask for smaller blocks and for Size2, and for less with ?href= and ?rt=
// (RFC 6690 §4.1, a trailing * for a prefix).
func TestWellKnownCoreGoesInBlocksAndFilters(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		for i := range 100 {
			c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("sensor-%03d", i), Target: "coap://127.0.0.1:9/"})
		}
		c.Route = append(c.Route, RouteConfig{Name: "valve", Target: "coap://127.0.0.1:9/"})
	})
	a := newAmpPeer(t, 1)
	first := a.exchange(wkcRequest("1"), p.Addrs()[0])
	blk, ok, _ := blockwise.Get(first.Options, coap.Block2)
	if !ok || blk.SZX != 6 || !blk.More || len(first.Payload) != 1024 {
		t.Fatalf("a %d-link listing: %+v %d bytes, want a first block of 1024", 101, blk, len(first.Payload))
	}
	if _, ok := first.Options.Get(coap.Echo); ok {
		t.Fatal("an Echo value to a verified client")
	}
	small := wkcRequest("2")
	small.Options = small.Options.Set(coap.Block2, blockwise.Block{SZX: 2}.Value()).SetUint(coap.Size2, 0)
	got := a.exchange(small, p.Addrs()[0])
	b2, _, _ := blockwise.Get(got.Options, coap.Block2)
	size2, hasSize2 := got.Options.Uint(coap.Size2)
	if b2.SZX != 2 || len(got.Payload) != 64 || !hasSize2 || size2 < 2000 {
		t.Fatalf("asked for 64-byte blocks and Size2: %+v, %d bytes, Size2 %d %v", b2, len(got.Payload), size2, hasSize2)
	}
	past := wkcRequest("3")
	past.Options = past.Options.Set(coap.Block2, blockwise.Block{Num: 1000, SZX: 6}.Value())
	if got := a.exchange(past, p.Addrs()[0]); got.Code != coap.BadOption {
		t.Fatalf("a block past the end: %v, want 4.02", got.Code)
	}
	for _, tc := range []struct{ query, want string }{
		{"href=/valve", `</valve>;title="route"`},
		{"href=/sensor-09*", strings.Join(func() []string {
			var s []string
			for i := 90; i < 100; i++ {
				s = append(s, fmt.Sprintf(`</sensor-%03d>;title="route"`, i))
			}
			return s
		}(), ",")},
		{"title=route", ""}, // checked by length below
		{"rt=core.ps", ""},
	} {
		m := wkcRequest("q")
		m.Options = m.Options.Insert(coap.URIQuery, []byte(tc.query))
		got := a.exchange(m, p.Addrs()[0])
		switch tc.query {
		case "title=route":
			if _, ok := got.Options.Get(coap.Block2); !ok {
				t.Errorf("?%s: all 101 links, want them in blocks", tc.query)
			}
		default:
			if got.Code != coap.Content || string(got.Payload) != tc.want || got.Options.Has(coap.Block2) {
				t.Errorf("?%s: %v %q, want %q in one piece", tc.query, got.Code, got.Payload, tc.want)
			}
		}
	}
}

// A cache hit on a 60 KB representation, asked for with a NON GET from an
// unverified address, is a 4.01 with an Echo value of at most three times
// the request; the same request with the value gets the representation,
// and the address is verified from then on.
func TestCacheHitToUnverifiedClientIsAnEchoChallenge(t *testing.T) {
	origin, uri := bigOrigin(t, 60000)
	p := startProxy(t, unverified)
	victim := newAmpPeer(t, 2)
	get := func(tok string) *coap.Message {
		return &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Token: []byte(tok), Options: proxyURI(uri)}
	}
	req := get("a")
	resp := victim.exchange(req, p.Addrs()[0])
	mustFit(t, "the answer to the first request", req, resp)
	echo, ok := resp.Options.Get(coap.Echo)
	if resp.Code != coap.Unauthorized || !ok || resp.Type != coap.NonConfirmable {
		t.Fatalf("got %v, want a NON 4.01 with Echo", resp)
	}
	// The proxy forwarded the safe request all the same (RFC 9175 §2.4:
	// to have it ready): the repeated request is a cache hit.
	if origin.count() != 1 {
		t.Fatalf("origin got %d requests, want 1", origin.count())
	}
	again := get("b")
	again.Options = again.Options.Set(coap.Echo, echo)
	full := victim.exchange(again, p.Addrs()[0])
	if full.Code != coap.Content || len(full.Payload) != 60000 {
		t.Fatalf("with the Echo value: %v, %d bytes", full.Code, len(full.Payload))
	}
	if origin.count() != 1 {
		t.Fatalf("origin got %d requests, want the second answered from the cache", origin.count())
	}
	// Verified: no challenge any more, for a while.
	if full := victim.exchange(get("c"), p.Addrs()[0]); full.Code != coap.Content || len(full.Payload) != 60000 {
		t.Fatalf("verified client: %v, %d bytes", full.Code, len(full.Payload))
	}
	// Another address, unverified, gets the challenge from the cache too.
	other := newAmpPeer(t, 3)
	req = get("d")
	resp = other.exchange(req, p.Addrs()[0])
	mustFit(t, "the cache hit to another unverified address", req, resp)
	if resp.Code != coap.Unauthorized {
		t.Fatalf("another address: %v", resp.Code)
	}
	if st := p.amp.Stats(); st.Challenges != 2 || st.EchoVerified != 1 || st.Verified != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// An Echo value that is not the proxy's (an origin's own, RFC 9175 §2.4)
// travels to the origin untouched.
func TestForeignEchoIsForwarded(t *testing.T) {
	origin := newRecorder(t, content("x"))
	p := startProxy(t, nil)
	c := client(t)
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://"+origin.addr.String()+"/r").Set(coap.Echo, []byte("origin's own"))}
	do(t, c, p, req)
	if in, _ := origin.last(t); !bytes.Equal(func() []byte { v, _ := in.Options.Get(coap.Echo); return v }(), []byte("origin's own")) {
		t.Fatalf("the origin got %v", in.Options)
	}
}

// A CON request from an unverified address whose answer takes longer
// than the endpoint waits before its empty ACK gets the challenge
// piggybacked in the ACK, never as a separate response (RFC 9175 §2.4
// item 3). The answer that comes later is not sent; the cache keeps it
// for the repeated request.
func TestSlowOriginToUnverifiedCONGetsPiggybackedChallenge(t *testing.T) {
	release := make(chan struct{})
	var got atomic.Int32
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oe := coap.NewEndpoint(u, coap.EndpointConfig{Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		got.Add(1)
		<-release
		m := &coap.Message{Code: coap.Content, Payload: []byte("slow but small")}
		m.Options = m.Options.SetUint(coap.MaxAge, 60)
		return w.WriteResponse(m)
	})})
	t.Cleanup(func() { oe.Close() })
	p := startProxy(t, func(c *Config) { unverified(c); c.Proxy.Timeout = Duration{10 * time.Second} })
	a := newAmpPeer(t, 2)
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: []byte("s"), Options: proxyURI("coap://" + u.LocalAddr().String() + "/slow")}
	resp := a.exchange(req, p.Addrs()[0])
	close(release)
	if resp.Type != coap.Acknowledgement || resp.Code != coap.Unauthorized || !resp.Options.Has(coap.Echo) || resp.MID != req.MID {
		t.Fatalf("got %v, want the 4.01 with Echo piggybacked in the ACK", resp)
	}
	echo, _ := resp.Options.Get(coap.Echo)
	// The repeated request, once the origin's answer is in the cache.
	waitFor(t, "the slow answer in the cache", func() bool { return p.Cache().Stats().Stored == 1 }, func() string { return "" })
	again := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: []byte("t"), Options: proxyURI("coap://"+u.LocalAddr().String()+"/slow").Set(coap.Echo, echo)}
	full := a.exchange(again, p.Addrs()[0])
	if full.Code != coap.Content || string(full.Payload) != "slow but small" || got.Load() != 1 {
		t.Fatalf("repeated: %v %q, origin asked %d times", full.Code, full.Payload, got.Load())
	}
}

// An unsafe request from an unverified address is not forwarded: the 4.01
// says it was not processed, and the client repeats it with the Echo
// value, which the proxy takes out before forwarding.
func TestUnsafeForwardFromUnverifiedIsChallengedFirst(t *testing.T) {
	origin := newRecorder(t, func(*coap.Message) *coap.Message { return &coap.Message{Code: coap.Changed} })
	p := startProxy(t, unverified)
	a := newAmpPeer(t, 2)
	put := func(tok string) *coap.Message {
		return &coap.Message{Type: coap.Confirmable, Code: coap.PUT, Token: []byte(tok), Options: proxyURI("coap://" + origin.addr.String() + "/valve"), Payload: []byte("open")}
	}
	resp := a.exchange(put("p"), p.Addrs()[0])
	echo, ok := resp.Options.Get(coap.Echo)
	if resp.Code != coap.Unauthorized || !ok {
		t.Fatalf("got %v", resp)
	}
	if origin.count() != 0 {
		t.Fatal("the unsafe request was forwarded before the client was verified")
	}
	again := put("q")
	again.Options = again.Options.Set(coap.Echo, echo)
	if !again.Options.Has(coap.Echo) {
		t.Fatal("the repeated request carries no Echo option")
	}
	if resp := a.exchange(again, p.Addrs()[0]); resp.Code != coap.Changed || origin.count() != 1 {
		t.Fatalf("with the Echo value: %v, origin got %d", resp.Code, origin.count())
	}
	// The proxy's own Echo value is not forwarded (RFC 9175 §2.3).
	if in, _ := origin.last(t); in.Options.Has(coap.Echo) {
		t.Fatal("the proxy's Echo option reached the origin")
	}
}

// An error's diagnostic payload that would take the answer past the
// limit is dropped (RFC 7252 §5.5.2 makes it optional); the code stays.
func TestErrorDiagnosticIsDroppedOverTheLimit(t *testing.T) {
	p := startProxy(t, unverified)
	a := newAmpPeer(t, 2)
	req := &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Token: []byte("e")}
	req.Options = req.Options.Insert(coap.OptionID(9999), nil) // critical, unknown: 4.02 with a diagnostic
	resp := a.exchange(req, p.Addrs()[0])
	mustFit(t, "the 4.02", req, resp)
	if resp.Code != coap.BadOption || len(resp.Payload) != 0 {
		t.Fatalf("got %v %q, want a bare 4.02", resp.Code, resp.Payload)
	}
	// A verified client gets the diagnostic.
	if resp := do(t, client(t), startProxy(t, nil), &coap.Message{Code: coap.GET, Options: req.Options}); len(resp.Payload) == 0 {
		t.Fatalf("verified: %v without diagnostic", resp.Code)
	}
	if st := p.amp.Stats(); st.Trimmed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A radio node that acknowledges a CON the gateway sent it (a forwarded
// request) is verified: it receives at its address.
func TestNodeThatAcknowledgesACONIsVerified(t *testing.T) {
	p, n := startSimProxy(t)
	node := n.Nodes()[0]
	if p.amp.has(node) {
		t.Fatal("verified before anything was sent to it")
	}
	get := &coap.Message{Code: coap.GET, Options: proxyURI(nodeURI(n, 0, "/sensors/temp"))}
	if resp := do(t, client(t), p, get); resp.Code != coap.Content {
		t.Fatalf("GET: %v", resp.Code)
	}
	if !p.amp.has(node) || p.amp.Stats().AckVerified == 0 {
		t.Fatalf("node %v not verified after acknowledging the gateway's CON: %+v", node, p.amp.Stats())
	}
}

// An answer to an unverified client that comes after the empty ACK would
// be a separate response, a CON retransmitted up to MAX_RETRANSMIT times:
// it goes only if all its copies and the ACK fit the limit, and a
// challenge never goes that way (RFC 9175 §2.4 item 3).
func TestLateAnswersToUnverifiedGoSeparateOnlyWithinTheLimit(t *testing.T) {
	v := newVerifier(Defaults().Proxy)
	for _, tc := range []struct {
		name    string
		limit   int
		safe    bool
		resp    *coap.Message
		sent    bool
		dropped uint64
	}{
		{"a small 2.04 to a PUT, all copies within the limit", 3 * 60, false, &coap.Message{Code: coap.Changed}, true, 0},
		{"the same 2.04, its copies over the limit", 3 * 12, false, &coap.Message{Code: coap.Changed}, false, 1},
		{"a large 2.05 becomes a challenge, which never goes late", 3 * 40, true, &coap.Message{Code: coap.Content, Payload: make([]byte, 500)}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := v.dropped.Load()
			// The client's CON request has had its empty ACK:
			// WritePrompt refuses, WriteResponse sends a separate
			// response.
			w := coaptest.NewRecorder(nil)
			w.SetAcked()
			l := &limitWriter{w: w, v: v, peer: netip.MustParseAddr("192.0.2.9"), tokLen: 4, limit: tc.limit, safe: tc.safe}
			if err := coap.WrapWriter(w, l).WriteResponse(tc.resp); err != nil {
				t.Fatal(err)
			}
			if sent := w.Msg() != nil; sent != tc.sent {
				t.Fatalf("sent as a separate response: %v, want %v", sent, tc.sent)
			}
			if got := v.dropped.Load() - before; got != tc.dropped {
				t.Fatalf("dropped %d, want %d", got, tc.dropped)
			}
		})
	}
}

// Reload applies [proxy] verified at once: loopback verified by default,
// unverified once the list is emptied.
func TestReloadAppliesVerified(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		for i := range 100 {
			c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("route-%03d", i), Target: "coap://127.0.0.1:9/"})
		}
	})
	a := newAmpPeer(t, 2)
	if got := a.exchange(wkcRequest("1"), p.Addrs()[0]); len(got.Payload) != 1024 {
		t.Fatalf("verified loopback: a first block of %d bytes, want 1024", len(got.Payload))
	}
	cfg := p.chain.Load().cfg
	cfg.Proxy.Verified = nil
	if _, err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	req := wkcRequest("2")
	got := a.exchange(req, p.Addrs()[0])
	mustFit(t, "after the reload", req, got)
	if !got.Options.Has(coap.Echo) {
		t.Fatalf("unverified after the reload: %v without Echo", got)
	}
}

// Validate refuses amplification settings that make no sense.
func TestConfigValidatesAmplificationKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*ProxyConfig)
		want string
	}{
		{"verified not a prefix", func(p *ProxyConfig) { p.Verified = []string{"lan"} }, "verified"},
		{"verified_for zero", func(p *ProxyConfig) { p.VerifiedFor = Duration{} }, "verified_for"},
		{"verified_for over a week", func(p *ProxyConfig) { p.VerifiedFor = Duration{8 * 24 * time.Hour} }, "verified_for"},
		{"max_verified zero", func(p *ProxyConfig) { p.MaxVerified = 0 }, "max_verified"},
		{"max_verified huge", func(p *ProxyConfig) { p.MaxVerified = 1 << 30 }, "max_verified"},
		{"echo_lifetime under a second", func(p *ProxyConfig) { p.EchoLifetime = Duration{time.Millisecond} }, "echo_lifetime"},
		{"echo_lifetime over a day", func(p *ProxyConfig) { p.EchoLifetime = Duration{25 * time.Hour} }, "echo_lifetime"},
	} {
		c := Defaults()
		tc.mod(&c.Proxy)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	c := Defaults()
	c.Proxy.Verified = []string{}
	if err := c.Validate(); err != nil {
		t.Fatalf("an empty verified list: %v", err)
	}
}

// The answer to an unsafe request that was processed (the broker's
// 2.01) cannot become a 4.01, which would have the client do it again:
// over the limit it goes without its payload, and without its options
// too if need be.
func TestProcessedUnsafeAnswerIsTrimmedNotChallenged(t *testing.T) {
	v := newVerifier(Defaults().Proxy)
	created := &coap.Message{Code: coap.Created, Payload: make([]byte, 200)}
	created.Options = created.Options.Insert(coap.LocationPath, []byte("ps")).Insert(coap.LocationPath, []byte("0a1b2c3d"))
	for _, tc := range []struct {
		name    string
		limit   int
		options bool
	}{
		{"room for the options", 3 * 20, true},
		{"room for the code alone", 3 * 5, false},
	} {
		w := coaptest.NewRecorder(nil)
		l := &limitWriter{w: w, v: v, peer: netip.MustParseAddr("192.0.2.9"), tokLen: 1, limit: tc.limit, safe: false}
		if err := coap.WrapWriter(w, l).WriteResponse(created); err != nil {
			t.Fatal(err)
		}
		if w.Writes() != 1 {
			t.Fatalf("%s: %d messages sent", tc.name, w.Writes())
		}
		got := w.Msg()
		if got.Code != coap.Created || len(got.Payload) != 0 || got.Options.Has(coap.LocationPath) != tc.options || l.size(got) > tc.limit {
			t.Fatalf("%s: sent %v with options %v, want a 2.01 without payload, Location-Path %v, within %d bytes", tc.name, got, got.Options, tc.options, tc.limit)
		}
	}
	if st := v.Stats(); st.Trimmed != 2 || st.Challenges != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The rate limit's 4.29 goes through the limit too: the amplification
// stage comes first in the chain.
func TestRateLimitAnswerStaysWithinTheLimit(t *testing.T) {
	p := startProxy(t, func(c *Config) { unverified(c); c.Proxy.Rate, c.Proxy.Burst = 0.001, 1 })
	a := newAmpPeer(t, 2)
	a.exchange(&coap.Message{Type: coap.NonConfirmable, Code: coap.GET}, p.Addrs()[0]) // takes the one token
	req := &coap.Message{Type: coap.NonConfirmable, Code: coap.GET}                    // 4 bytes
	resp := a.exchange(req, p.Addrs()[0])
	if resp.Code != coap.TooManyRequests {
		t.Fatalf("got %v, want 4.29", resp.Code)
	}
	mustFit(t, "the 4.29", req, resp)
}
