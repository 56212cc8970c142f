package coap

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// A CON request answered within AckDelay: WritePrompt piggybacks the
// answer in the ACK, as WriteResponse would.
func TestWritePromptPiggybacksAQuickAnswer(t *testing.T) {
	_, addr := serve(t, EndpointConfig{Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return WritePrompt(w, &Message{Code: Unauthorized})
	})})
	c := rawPeer(t)
	b, _ := (&Message{Type: Confirmable, Code: GET, MID: 3, Token: []byte{7}}).Marshal()
	got := exchange(t, c, addr, b)
	if got.Type != Acknowledgement || got.Code != Unauthorized || got.MID != 3 {
		t.Fatalf("want the 4.01 piggybacked in the ACK of mid 3, got %v", got)
	}
}

// Once a CON request has had its empty ACK, WritePrompt sends nothing
// (a separate response would be a CON, retransmitted to an address no
// one has verified) and says so; WriteResponse then still answers.
func TestWritePromptRefusesASeparateResponse(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	result := make(chan error, 1)
	clk := fakeClock()
	_, addr := serve(t, EndpointConfig{AckDelay: 10 * time.Millisecond, Clock: clk, Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		entered <- struct{}{}
		<-release
		err := WritePrompt(w, &Message{Code: Unauthorized})
		result <- err
		if errors.Is(err, ErrSeparate) {
			return w.WriteResponse(&Message{Code: Content, Payload: []byte("late")})
		}
		return err
	})})
	c := rawPeer(t)
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	b, _ := (&Message{Type: Confirmable, Code: GET, MID: 4, Token: []byte{8}}).Marshal()
	if _, err := c.WriteToUDPAddrPort(b, addr); err != nil {
		t.Fatal(err)
	}
	<-entered
	clk.Advance(10 * time.Millisecond)
	ack := readMsg(t, c)
	if ack.Type != Acknowledgement || ack.Code != Empty {
		t.Fatalf("want an empty ACK first, got %v", ack)
	}
	free()
	if err := <-result; !errors.Is(err, ErrSeparate) {
		t.Fatalf("WritePrompt after the empty ACK: %v, want ErrSeparate", err)
	}
	sep := readMsg(t, c)
	if sep.Type != Confirmable || sep.Code != Content || string(sep.Payload) != "late" {
		t.Fatalf("the next datagram is %v %q, want the CON 2.05 WriteResponse sent (and no 4.01 before it)", sep, sep.Payload)
	}
}

// A NON request is always answered at once with a NON: WritePrompt
// sends it whenever it comes.
func TestWritePromptAnswersANONLate(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	clk := fakeClock()
	_, addr := serve(t, EndpointConfig{AckDelay: 10 * time.Millisecond, Clock: clk, Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		entered <- struct{}{}
		<-release // past AckDelay, which does not apply to a NON
		return WritePrompt(w, &Message{Code: Content})
	})})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	c := rawPeer(t)
	b, _ := (&Message{Type: NonConfirmable, Code: GET, MID: 5, Token: []byte{9}}).Marshal()
	if _, err := c.WriteToUDPAddrPort(b, addr); err != nil {
		t.Fatal(err)
	}
	<-entered
	clk.Advance(50 * time.Millisecond)
	free()
	if got := readMsg(t, c); got.Type != NonConfirmable || got.Code != Content {
		t.Fatalf("got %v, want a NON 2.05", got)
	}
}

// OnAck hears of a CON the endpoint sent that the peer acknowledged,
// with the peer's address, and of nothing else: not of a NON, not of an
// RST.
func TestOnAckReportsAcknowledgedCONs(t *testing.T) {
	acked := make(chan netip.AddrPort, 4)
	var obs NotifyWriter
	got := make(chan struct{})
	srv, addr := serve(t, EndpointConfig{
		OnAck: func(p netip.AddrPort) { acked <- p },
		Handler: HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
			nw, ok := w.(NotifyWriter)
			if !ok {
				return Errorf(InternalServerError, "the writer cannot notify")
			}
			obs = nw
			close(got)
			return w.WriteResponse(&Message{Code: Content})
		}),
	})
	_ = srv
	c := rawPeer(t)
	b, _ := (&Message{Type: NonConfirmable, Code: GET, MID: 1, Token: []byte{1}}).Marshal()
	exchange(t, c, addr, b)
	<-got
	peer := c.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()

	// A NON notification: no ACK to hear of.
	if err := obs.Notify(&Message{Code: Content}, false, nil); err != nil {
		t.Fatal(err)
	}
	readMsg(t, c)
	// A CON rejected with RST: not an acknowledgement.
	done := make(chan error, 2)
	if err := obs.Notify(&Message{Code: Content}, true, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	con := readMsg(t, c)
	rst, _ := (&Message{Type: Reset, MID: con.MID}).Marshal()
	c.WriteToUDPAddrPort(rst, addr)
	if err := <-done; !errors.Is(err, ErrReset) {
		t.Fatalf("RST outcome %v", err)
	}
	// A CON acknowledged: heard of.
	if err := obs.Notify(&Message{Code: Content}, true, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	con = readMsg(t, c)
	ack, _ := (&Message{Type: Acknowledgement, MID: con.MID}).Marshal()
	c.WriteToUDPAddrPort(ack, addr)
	if err := <-done; err != nil {
		t.Fatalf("ACK outcome %v", err)
	}
	select {
	case p := <-acked:
		if p.Port() != peer.Port() {
			t.Fatalf("OnAck named %v, want the observer %v", p, peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnAck not called for an acknowledged CON")
	}
	select {
	case p := <-acked:
		t.Fatalf("OnAck called again, for %v: only one CON was acknowledged", p)
	default:
	}
}
