package stream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// notifier registers observers and lets the test push states to them.
type notifier struct {
	ws chan coap.NotifyWriter
}

func (n *notifier) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	if v, ok := r.Msg.Options.Uint(coap.Observe); ok && v == 0 {
		resp := &coap.Message{Code: coap.Content, Payload: []byte("0")}
		resp.Options = resp.Options.SetUint(coap.Observe, 1)
		if err := w.WriteResponse(resp); err != nil {
			return err
		}
		n.ws <- w.(coap.NotifyWriter)
		return nil
	}
	return echo.ServeCoAP(ctx, w, r)
}

func TestClientDoAndObserveInOrder(t *testing.T) {
	n := &notifier{ws: make(chan coap.NotifyWriter, 1)}
	_, addr := serve(t, Config{Handler: n})
	cl := NewClient(Config{})
	defer cl.Close()
	ctx := context.Background()
	c, err := cl.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ctx, get(0, "hello"))
	if err != nil || string(resp.Payload) != "echo hello" {
		t.Fatalf("Do: %v %v", resp, err)
	}
	got := make(chan string, 100)
	first, cancel, err := c.Observe(ctx, get(0, "obs"), func(m *coap.Message) { got <- string(m.Payload) })
	if err != nil || cancel == nil || string(first.Payload) != "0" {
		t.Fatalf("Observe: %v %v", first, err)
	}
	w := <-n.ws
	sw, ok := w.(coap.StreamWriter)
	if !ok {
		t.Fatal("the writer of a stream request is no coap.StreamWriter")
	}
	for i := 1; i <= 50; i++ {
		m := &coap.Message{Code: coap.Content, Payload: fmt.Appendf(nil, "%d", i)}
		m.Options = m.Options.SetUint(coap.Observe, uint32(i+1))
		if err := w.Notify(m, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	// §7.1: over a stream, notifications arrive in the order sent.
	for i := 1; i <= 50; i++ {
		select {
		case s := <-got:
			if s != fmt.Sprint(i) {
				t.Fatalf("notification %q, want %d", s, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("notification missing")
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-sw.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the writer's context did not end with the connection (§7.4)")
	}
	if err := w.Notify(&coap.Message{Code: coap.Content}, true, nil); err == nil {
		t.Fatal("Notify on a closed connection succeeded")
	}
}

func TestTLSListenerNamesCertificateClients(t *testing.T) {
	pki := testpeer.NewPKI(t)
	pool := pki.CA
	who := make(chan string, 1)
	h := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		who <- fmt.Sprintf("%s secure=%v conn=%v", r.Identity, r.Secure, r.Conn != 0)
		return w.WriteResponse(&coap.Message{Code: coap.Content})
	})
	s := NewServer(Config{Handler: h})
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l, &tls.Config{Certificates: []tls.Certificate{pki.Server}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, NextProtos: []string{"coap"}})
	cl := NewClient(Config{})
	defer cl.Close()
	c, err := cl.Dial(context.Background(), l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pki.Client}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(context.Background(), get(0, "x")); err != nil {
		t.Fatal(err)
	}
	if got := <-who; got != "cn:client1 secure=true conn=true" {
		t.Fatalf("request seen as %q", got)
	}
}

func TestWebSocketRoundTripAndSubprotocol(t *testing.T) {
	s := NewServer(Config{Handler: echo})
	defer s.Close()
	url := serveWS(t, s)
	cl := NewClient(Config{})
	defer cl.Close()
	ctx := context.Background()
	c, err := cl.DialWS(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ws://" + c.Peer().String(); !strings.HasPrefix(url, want+"/") {
		t.Fatalf("peer %v, want the server's address in %s", c.Peer(), url)
	}
	resp, err := c.Do(ctx, get(0, "ws"))
	if err != nil || string(resp.Payload) != "echo ws" {
		t.Fatalf("%v %v", resp, err)
	}
	// Without the "coap" subprotocol (§4.1) the server refuses.
	wc, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"chat"}})
	if err == nil {
		_, _, rerr := wc.Read(ctx)
		if websocket.CloseStatus(rerr) != websocket.StatusProtocolError {
			t.Fatalf("a client without subprotocol coap got %v", rerr)
		}
	}
	// A page of another origin is refused (WSOrigins).
	hdr := http.Header{"Origin": {"http://elsewhere.example"}}
	if _, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"coap"}, HTTPHeader: hdr}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("cross-origin handshake: %v", err)
	}
}

// A WebSocket connection beyond MaxConns is closed, and its HTTP handler
// returns with it: Close does not wait on a handler that waits on a
// connection that never started.
func TestWebSocketConnectionsBeyondMaxConnsAreClosedAndServerCloses(t *testing.T) {
	s := NewServer(Config{Handler: echo, MaxConns: 1})
	url := serveWS(t, s)
	cl := NewClient(Config{})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c1, err := cl.DialWS(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c1.Do(ctx, get(0, "first")); err != nil || string(resp.Payload) != "echo first" {
		t.Fatalf("%v %v", resp, err)
	}
	c2, err := cl.DialWS(ctx, url, nil)
	if err == nil {
		select {
		case <-c2.Done():
		case <-ctx.Done():
			t.Fatal("the connection beyond MaxConns stayed open")
		}
	}
	if st := s.Stats(); st.OverLimit != 1 {
		t.Fatalf("OverLimit %d, want 1", st.OverLimit)
	}
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Server.Close still waits for the refused connection's handler")
	}
}

// Whichever side closes a WebSocket connection sends a Close frame with
// 1000 (RFC 6455 §7.1.2, RFC 8323 Figure 17), so that the peer (a
// browser's onclose) sees a clean close rather than 1006: the server
// after an Abort, the client on Close. A peer that never answers its
// Close does not hold the server's Close.
func TestWebSocketClosesWithACloseFrame(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s := NewServer(Config{Handler: echo})
	url := serveWS(t, s)
	peer := func() *websocket.Conn {
		wc, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"coap"}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := AppendFrame(nil, csm(0), true)
		if err := wc.Write(ctx, websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
		if _, m, err := wc.Read(ctx); err != nil || len(m) < 2 || coap.Code(m[1]) != CSM {
			t.Fatalf("the server's first message: %x %v", m, err)
		}
		return wc
	}
	// A frame with a Len field (§4.2 wants 0) is answered with Abort
	// (§5.6), then the Close frame.
	wc := peer()
	if err := wc.Write(ctx, websocket.MessageBinary, []byte{0x10, byte(coap.GET), 0}); err != nil {
		t.Fatal(err)
	}
	if _, m, err := wc.Read(ctx); err != nil || coap.Code(m[1]) != Abort {
		t.Fatalf("after a bad frame: %x %v, want Abort", m, err)
	}
	if _, _, err := wc.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after the Abort the server's connection ended with %v, want a Close frame with 1000", err)
	}

	// The client's Close, to a server that is not this package's.
	got := make(chan error, 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"coap"}})
		if err != nil {
			got <- err
			return
		}
		b, _ := AppendFrame(nil, csm(0), true)
		wc.Write(ctx, websocket.MessageBinary, b)
		for {
			if _, _, err := wc.Read(ctx); err != nil {
				got <- err
				return
			}
		}
	}))
	defer origin.Close()
	cl := NewClient(Config{})
	defer cl.Close()
	c, err := cl.DialWS(ctx, "ws"+strings.TrimPrefix(origin.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-got:
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("the client's Close reached the server as %v, want a Close frame with 1000", err)
		}
	case <-ctx.Done():
		t.Fatal("the server heard nothing of the client's Close")
	}

	// A peer that reads nothing more never answers the Close frame.
	peer()
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Server.Close waits on a peer that does not answer its Close frame")
	}
}

// serveWS serves s's WebSocket endpoint on a port of its own and returns
// its URL.
func serveWS(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeWS(l, "/.well-known/coap", nil); err != nil {
		t.Fatal(err)
	}
	return "ws://" + l.Addr().String() + "/.well-known/coap"
}
