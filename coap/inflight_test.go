package coap

import (
	"context"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// peerOn is a raw UDP socket on a loopback address of its own: 127/8 is
// all loopback, so 127.0.0.2 and 127.0.0.3 are two clients of one host.
func peerOn(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, m *Message) {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// holder answers "hold" requests only when released, as a proxy answers
// a request to a silent upstream only at its timeout; anything else at
// once.
type holder struct {
	mu      sync.Mutex
	held    []ResponseWriter // guarded by mu
	release chan struct{}
}

func (h *holder) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	if string(r.Msg.Payload) != "hold" {
		return w.WriteResponse(&Message{Code: Content, Payload: []byte("ok")})
	}
	return Later(ctx, func() {
		h.mu.Lock()
		h.held = append(h.held, w)
		h.mu.Unlock()
		go func() {
			<-h.release
			w.WriteResponse(&Message{Code: GatewayTimeout})
			Finish(w, nil)
		}()
	})
}

// One client with many source ports gets MaxInflightPerClient requests in
// flight and a small 5.03 with Max-Age ShareMaxAge for the next; another
// client's requests are served as if nothing happened, and so are the
// requests Local picks, from either client, even once every slot is
// taken.
func TestOneClientCannotTakeMoreThanItsShare(t *testing.T) {
	h := &holder{release: make(chan struct{})}
	defer close(h.release)
	e, addr := serve(t, EndpointConfig{
		Handler:              h,
		Inline:               func(*Request) bool { return true },
		Local:                func(r *Request) bool { return string(r.Msg.Payload) == "local" },
		MaxInflight:          6,
		MaxInflightPerClient: 4,
		ShareMaxAge:          7 * time.Second,
	})
	get := func(payload string, mid uint16) *Message {
		return &Message{Type: Confirmable, Code: GET, MID: mid, Token: []byte{byte(mid)}, Payload: []byte(payload)}
	}
	// The flooder: a socket per request, as a spoofer with many ports.
	var flood []*net.UDPConn
	for i := range 4 {
		c := peerOn(t, "127.0.0.2")
		flood = append(flood, c)
		send(t, c, addr, get("hold", uint16(i)))
	}
	testutil.Eventually(t, "the flooder's share in flight", func() bool { return e.Stats().Inflight == 4 })
	over := peerOn(t, "127.0.0.2")
	send(t, over, addr, get("hold", 100))
	resp := readMsg(t, over)
	if resp.Code != ServiceUnavailable || resp.MID != 100 || string(resp.Token) != "\x64" {
		t.Fatalf("over its share: %v %v mid %d, want a piggybacked 5.03", resp.Type, resp.Code, resp.MID)
	}
	if age, ok := resp.Options.Uint(MaxAge); !ok || age != 7 {
		t.Fatalf("Max-Age %d (%v), want ShareMaxAge 7", age, ok)
	}
	if len(resp.Options) != 1 || len(resp.Payload) != 0 {
		t.Fatalf("the 5.03 carries more than Max-Age: %v %q", resp.Options, resp.Payload)
	}
	if s := e.Stats(); s.ClientBusy != 1 || s.Busy != 0 || s.Inflight != 4 {
		t.Fatalf("stats %+v, want ClientBusy 1, Busy 0, Inflight 4", s)
	}
	// The flooder's own local requests are answered all the same.
	if resp := exchange(t, over, addr, mustMarshal(t, get("local", 101))); resp.Code != Content {
		t.Fatalf("the flooder's local request: %v", resp.Code)
	}

	// Another client: its requests go on, held or answered at once.
	other := peerOn(t, "127.0.0.3")
	if resp := exchange(t, other, addr, mustMarshal(t, get("now", 1))); resp.Code != Content {
		t.Fatalf("another client's request: %v", resp.Code)
	}
	send(t, other, addr, get("hold", 2))
	send(t, peerOn(t, "127.0.0.3"), addr, get("hold", 3))
	testutil.Eventually(t, "every slot taken", func() bool { return e.Stats().Inflight == 6 })
	// Now the pool itself is full: 5.03 with Max-Age 1 for anyone...
	third := peerOn(t, "127.0.0.4")
	resp = exchange(t, third, addr, mustMarshal(t, get("hold", 4)))
	if age, _ := resp.Options.Uint(MaxAge); resp.Code != ServiceUnavailable || age != 1 {
		t.Fatalf("with every slot taken: %v Max-Age %d, want 5.03 Max-Age 1", resp.Code, age)
	}
	// ...but not for what Local picks.
	if resp := exchange(t, third, addr, mustMarshal(t, get("local", 5))); resp.Code != Content {
		t.Fatalf("a local request with every slot taken: %v", resp.Code)
	}
	if s := e.Stats(); s.Busy != 1 || s.ClientBusy != 1 || s.Local != 2 {
		t.Fatalf("stats %+v, want Busy 1, ClientBusy 1, Local 2", s)
	}
}

// Answered, a request gives its client's slot back.
func TestShareComesBackWhenAnswered(t *testing.T) {
	h := &holder{release: make(chan struct{})}
	e, addr := serve(t, EndpointConfig{Handler: h, MaxInflightPerClient: 1})
	c := peerOn(t, "127.0.0.2")
	send(t, c, addr, &Message{Type: NonConfirmable, Code: GET, MID: 1, Token: []byte{1}, Payload: []byte("hold")})
	testutil.Eventually(t, "the request in flight", func() bool { return e.Stats().Inflight == 1 })
	if resp := exchange(t, c, addr, mustMarshal(t, &Message{Type: NonConfirmable, Code: GET, MID: 2, Token: []byte{2}, Payload: []byte("now")})); resp.Code != ServiceUnavailable {
		t.Fatalf("second request over a share of 1: %v", resp.Code)
	}
	close(h.release)
	if resp := readMsg(t, c); resp.Code != GatewayTimeout || string(resp.Token) != "\x01" {
		t.Fatalf("the held request's answer: %v token %x", resp.Code, resp.Token)
	}
	testutil.Eventually(t, "the slot given back", func() bool { return e.Stats().Inflight == 0 })
	if resp := exchange(t, c, addr, mustMarshal(t, &Message{Type: NonConfirmable, Code: GET, MID: 3, Token: []byte{3}, Payload: []byte("now")})); resp.Code != Content {
		t.Fatalf("after the answer: %v", resp.Code)
	}
	// The third request gives its slot back once its answer is written,
	// which may be just after the client has it.
	testutil.Eventually(t, "no client counted with nothing in flight", func() bool {
		e.slots.mu.Lock()
		defer e.slots.mu.Unlock()
		return len(e.slots.clients) == 0
	})
}

// Reloaded limits apply to the next requests.
func TestSetInflightLimits(t *testing.T) {
	h := &holder{release: make(chan struct{})}
	defer close(h.release)
	e, addr := serve(t, EndpointConfig{Handler: h, MaxInflightPerClient: 1})
	c := peerOn(t, "127.0.0.2")
	send(t, c, addr, &Message{Type: NonConfirmable, Code: GET, MID: 1, Token: []byte{1}, Payload: []byte("hold")})
	testutil.Eventually(t, "the request in flight", func() bool { return e.Stats().Inflight == 1 })
	e.SetInflightLimits(10, 2, 5*time.Second)
	send(t, c, addr, &Message{Type: NonConfirmable, Code: GET, MID: 2, Token: []byte{2}, Payload: []byte("hold")})
	testutil.Eventually(t, "two in flight", func() bool { return e.Stats().Inflight == 2 })
	resp := exchange(t, c, addr, mustMarshal(t, &Message{Type: NonConfirmable, Code: GET, MID: 3, Token: []byte{3}, Payload: []byte("hold")}))
	if age, _ := resp.Options.Uint(MaxAge); resp.Code != ServiceUnavailable || age != 5 {
		t.Fatalf("third over a share of 2: %v Max-Age %d, want 5.03 Max-Age 5", resp.Code, age)
	}
}

func TestClientKeyIsTheIPv4AddressOrTheIPv6Slash64(t *testing.T) {
	k := func(s string) clientKey { return clientOf(netip.MustParseAddr(s)) }
	for _, tc := range []struct {
		name string
		a, b string
		same bool
	}{
		{"one IPv4 address", "192.0.2.1", "192.0.2.1", true},
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", false},
		{"IPv4 and its mapped form", "192.0.2.1", "::ffff:192.0.2.1", true},
		{"one /64, two interface identifiers", "2001:db8:1:2::1", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", true},
		{"two /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv6 loopback and IPv4 loopback", "::1", "127.0.0.1", false},
		{"the /64 of ::ffff:0:0/96 and an IPv4 address", "::1", "0.0.0.0", false},
		{"zones do not count", "fe80::1%eth0", "fe80::2%eth1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := k(tc.a) == k(tc.b); got != tc.same {
				t.Fatalf("same key for %s and %s: %v, want %v", tc.a, tc.b, got, tc.same)
			}
		})
	}
}

func mustMarshal(t *testing.T, m *Message) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A request Local picks is handled in an idempotent fashion whatever its
// method (§4.5 relaxed): once answered it is forgotten, and a duplicate is
// served again instead of being remembered for EXCHANGE_LIFETIME. A flood
// of requests for nothing leaves nothing behind.
func TestLocalRequestsAreNotRemembered(t *testing.T) {
	var served atomic.Int32
	e, addr := serve(t, EndpointConfig{
		Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
			served.Add(1)
			return Errorf(NotFound, "")
		}),
		Local: func(r *Request) bool { return string(r.Msg.Payload) != "remote" },
	})
	c := peerOn(t, "127.0.0.2")
	for i, payload := range []string{"local", "remote"} {
		post := mustMarshal(t, &Message{Type: Confirmable, Code: POST, MID: uint16(7 + i), Token: []byte(payload[:1]), Payload: []byte(payload)})
		for range 2 { // the request and its duplicate
			if resp := exchange(t, c, addr, post); resp.Code != NotFound {
				t.Fatalf("%s POST: %v", payload, resp.Code)
			}
		}
	}
	// The local POST was served twice; the other once, its duplicate
	// answered from memory.
	if got := served.Load(); got != 3 {
		t.Fatalf("handler ran %d times, want 3", got)
	}
	if s := e.Stats(); s.Duplicates != 1 || s.Local != 2 {
		t.Fatalf("Duplicates %d, Local %d; want 1 and 2", s.Duplicates, s.Local)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) != 1 {
		t.Fatalf("%d exchanges remembered, want the other POST's alone", len(e.seen))
	}
}

// stepper answers each request, through Later, when the test says so.
type stepper struct{ next chan struct{} }

func (s *stepper) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	return Later(ctx, func() {
		go func() {
			<-s.next
			w.WriteResponse(&Message{Code: GatewayTimeout})
			Finish(w, nil)
		}()
	})
}

// A client that does not acknowledge separate responses (a spoofed
// address) has at most its share of them retransmitted at once; the next
// go as NON (RFC 7252 §5.2.2), and an acknowledgement makes room again.
// Another client's are confirmable all along.
func TestUnacknowledgedSeparateResponsesAreBoundedPerClient(t *testing.T) {
	h := &stepper{next: make(chan struct{})}
	e, addr := serve(t, EndpointConfig{
		Handler:              h,
		AckDelay:             time.Millisecond,
		Params:               Params{AckTimeout: time.Minute}, // no retransmission to read past
		MaxInflightPerClient: 2,
	})
	// separate sends a CON GET from c, reads its empty ACK, has it
	// answered and returns the answer, unacknowledged.
	separate := func(c *net.UDPConn, mid uint16) *Message {
		t.Helper()
		send(t, c, addr, &Message{Type: Confirmable, Code: GET, MID: mid, Token: []byte{byte(mid)}})
		if ack := readMsg(t, c); ack.Type != Acknowledgement || ack.Code != Empty || ack.MID != mid {
			t.Fatalf("request %d: %v %v, want the empty ACK", mid, ack.Type, ack.Code)
		}
		h.next <- struct{}{}
		resp := readMsg(t, c)
		if resp.Code != GatewayTimeout || string(resp.Token) != string([]byte{byte(mid)}) {
			t.Fatalf("request %d: separate response %v token %x", mid, resp.Code, resp.Token)
		}
		return resp
	}
	spoofed := peerOn(t, "127.0.0.2")
	var cons []*Message
	for mid := uint16(1); mid <= 2; mid++ {
		if resp := separate(spoofed, mid); resp.Type != Confirmable {
			t.Fatalf("separate response %d within the share: %v", mid, resp.Type)
		} else {
			cons = append(cons, resp)
		}
	}
	if resp := separate(spoofed, 3); resp.Type != NonConfirmable {
		t.Fatalf("separate response 3 with two unacknowledged: %v, want NON", resp.Type)
	}
	if got := e.Stats().SeparateNON; got != 1 {
		t.Fatalf("SeparateNON %d, want 1", got)
	}
	// Another client, which acknowledges what it gets.
	other := peerOn(t, "127.0.0.3")
	for mid := uint16(10); mid <= 14; mid++ {
		resp := separate(other, mid)
		if resp.Type != Confirmable {
			t.Fatalf("another client's separate response %d: %v", mid, resp.Type)
		}
		send(t, other, addr, &Message{Type: Acknowledgement, Code: Empty, MID: resp.MID})
		testutil.Eventually(t, "the acknowledged CON to settle", func() bool { return e.Stats().Inflight == 0 && e.unacked.count() == 2 })
	}
	// One acknowledged: room for one more CON.
	send(t, spoofed, addr, &Message{Type: Acknowledgement, Code: Empty, MID: cons[0].MID})
	testutil.Eventually(t, "the acknowledged CON to settle", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		_, pending := e.pending[exKey{spoofed.LocalAddr().(*net.UDPAddr).AddrPort(), cons[0].MID}]
		return !pending
	})
	if resp := separate(spoofed, 4); resp.Type != Confirmable {
		t.Fatalf("separate response after an acknowledgement: %v, want CON", resp.Type)
	}
	if resp := separate(spoofed, 5); resp.Type != NonConfirmable {
		t.Fatalf("separate response 5: %v, want NON", resp.Type)
	}
}
