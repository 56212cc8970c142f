package bridge

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// wiretap relays datagrams between one client and the proxy and keeps
// every one the proxy sends back, decoded.
type wiretap struct {
	front, back *net.UDPConn
	proxy       *net.UDPAddr

	mu     sync.Mutex
	client *net.UDPAddr    // guarded by mu
	req    *coap.Message   // guarded by mu: the client's first request
	got    []*coap.Message // guarded by mu: what the proxy sent the client
	more   chan struct{}   // a datagram from the proxy was kept
}

func newWiretap(t *testing.T, proxy netip.AddrPort) *wiretap {
	t.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	front, err := net.ListenUDP("udp", lo)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp", lo)
	if err != nil {
		t.Fatal(err)
	}
	w := &wiretap{front: front, back: back, proxy: net.UDPAddrFromAddrPort(proxy), more: make(chan struct{}, 1024)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			w.mu.Lock()
			w.client = from
			if w.req == nil {
				var m coap.Message
				if m.Decode(buf[:n]) == nil {
					w.req = m.Clone()
				}
			}
			w.mu.Unlock()
			back.WriteToUDP(buf[:n], w.proxy)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, _, err := back.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var m coap.Message
			if m.Decode(buf[:n]) != nil {
				continue
			}
			w.mu.Lock()
			w.got = append(w.got, m.Clone())
			to := w.client
			w.mu.Unlock()
			w.more <- struct{}{}
			front.WriteToUDP(buf[:n], to)
		}
	}()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return w
}

func (w *wiretap) addr() string { return w.front.LocalAddr().String() }

// responses waits until the proxy has sent n responses (not empty ACKs)
// or wait has passed, and returns them with the client's request.
func (w *wiretap) responses(n int, wait time.Duration) (*coap.Message, []*coap.Message) {
	deadline := time.After(wait)
	for {
		w.mu.Lock()
		var rs []*coap.Message
		for _, m := range w.got {
			if m.Code != coap.Empty {
				rs = append(rs, m)
			}
		}
		req := w.req
		w.mu.Unlock()
		if len(rs) >= n {
			return req, rs
		}
		select {
		case <-w.more:
		case <-deadline:
			return req, rs
		}
	}
}

// TestGroupGETFromLibcoapClient has libcoap's coap-client send a group
// GET through the proxy, Multicast-Timeout set with -O: the proxy sends it
// every node's answer, with coap-client's token and a Reply-From naming
// the node; coap-client shows the first (it ends a request at its first
// response).
func TestGroupGETFromLibcoapClient(t *testing.T) {
	p, n := startGroupProxy(t, 3, 300*time.Millisecond, nil)
	tap := newWiretap(t, p.Addrs()[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := testpeer.StartLibcoap(ctx, t, 0, "-m", "get", "-B", "5", "-O", "65002,0x0a",
		"-P", "coap://"+tap.addr(), "coap://[ff03::fd]/sensors/temp")
	req, got := tap.responses(len(n.Nodes()), 20*time.Second)
	if err := c.Wait(); err != nil {
		t.Fatalf("coap-client: %v\n%s", err, c.Log())
	}
	if req == nil {
		t.Fatal("coap-client sent nothing")
	}
	if v, ok := req.Options.Get(DefaultMulticastTimeoutOption); !ok || coap.DecodeUint(v) != 10 {
		t.Fatalf("coap-client's request %v: no Multicast-Timeout 10", req)
	}
	if len(got) != len(n.Nodes()) {
		t.Fatalf("the proxy sent %d responses, want %d:\n%s", len(got), len(n.Nodes()), c.Log())
	}
	var from []netip.Addr
	for _, m := range got {
		if !bytes.Equal(m.Token, req.Token) || m.Code != coap.Content {
			t.Fatalf("response %v to token %x", m, req.Token)
		}
		from = append(from, replyFromAddr(t, m).Addr())
	}
	slices.SortFunc(from, netip.Addr.Compare)
	if want := slices.SortedFunc(slices.Values(n.Nodes()), netip.Addr.Compare); !slices.Equal(from, want) {
		t.Fatalf("Reply-From names %v, want %v", from, want)
	}
	// What coap-client printed is the first node's answer.
	if out := strings.TrimSpace(c.Payloads()); out != string(got[0].Payload) {
		t.Fatalf("coap-client printed %q, the first response was %q", out, got[0].Payload)
	}
}
