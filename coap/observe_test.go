package coap

import (
	"context"
	"sync"
	"testing"
	"time"
)

// observable is a server that keeps each observer's writer and lets the
// test push notifications.
type observable struct {
	mu        sync.Mutex
	observers []NotifyWriter
	deregs    int
}

func (o *observable) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	resp := &Message{Code: Content, Payload: []byte("v0")}
	if v, ok := r.Msg.Options.Uint(Observe); ok {
		o.mu.Lock()
		if v == 0 {
			nw, ok := w.(NotifyWriter)
			if !ok {
				o.mu.Unlock()
				return Errorf(InternalServerError, "the writer cannot notify")
			}
			o.observers = append(o.observers, nw)
			resp.Options = resp.Options.SetUint(Observe, 1)
		} else {
			o.deregs++
		}
		o.mu.Unlock()
	}
	return w.WriteResponse(resp)
}

func (o *observable) notifyAll(t *testing.T, payload string, seq uint32, con bool) chan error {
	o.mu.Lock()
	defer o.mu.Unlock()
	done := make(chan error, len(o.observers))
	for _, w := range o.observers {
		n := &Message{Code: Content, Payload: []byte(payload)}
		n.Options = n.Options.SetUint(Observe, seq)
		if err := w.Notify(n, con, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	return done
}

func TestObserveReceivesNotificationsAndCancelDeregisters(t *testing.T) {
	srv := &observable{}
	_, addr := serve(t, EndpointConfig{Handler: srv})
	client, _ := serve(t, EndpointConfig{})
	got := make(chan string, 10)
	first, obs, err := client.Observe(context.Background(), addr, &Message{Code: GET}, func(m *Message) { got <- string(m.Payload) })
	if err != nil || obs == nil {
		t.Fatalf("observe: %v %v", first, err)
	}
	if string(first.Payload) != "v0" {
		t.Fatalf("first = %q", first.Payload)
	}
	done := srv.notifyAll(t, "v1", 2, true)
	select {
	case p := <-got:
		if p != "v1" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	if err := <-done; err != nil {
		t.Fatalf("CON notification not acknowledged: %v", err)
	}
	srv.notifyAll(t, "v2", 3, false)
	if p := <-got; p != "v2" {
		t.Fatalf("got %q", p)
	}
	if err := obs.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	deregs := srv.deregs
	srv.mu.Unlock()
	if deregs != 1 {
		t.Fatal("Cancel must send Observe=1 (RFC 7641 §3.6)")
	}
	// After Cancel a notification is rejected with RST, and the server
	// learns it.
	done = srv.notifyAll(t, "v3", 4, true)
	if err := <-done; err != ErrReset {
		t.Fatalf("notification after cancel: %v, want ErrReset", err)
	}
	done = srv.notifyAll(t, "v4", 5, false)
	if err := <-done; err != ErrReset {
		t.Fatalf("NON notification after cancel: %v, want ErrReset", err)
	}
}

// lateNotifier sends a notification while it handles the deregistration,
// before its answer: an origin whose notification crossed the client's
// GET with Observe=1.
type lateNotifier struct {
	observable
	late chan error // the fate of that notification
}

func (o *lateNotifier) ServeCoAP(ctx context.Context, w ResponseWriter, r *Request) error {
	if v, ok := r.Msg.Options.Uint(Observe); ok && v == 1 {
		o.mu.Lock()
		n := &Message{Code: Content, Payload: []byte("late")}
		n.Options = n.Options.SetUint(Observe, 9)
		err := o.observers[0].Notify(n, false, func(err error) { o.late <- err })
		o.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return o.observable.ServeCoAP(ctx, w, r)
}

// A notification that arrives while Cancel's deregistration is in flight
// shares its token, but it is not the answer (that has no Observe, RFC
// 7641 §3.6): it is rejected with RST, and Cancel waits for the answer.
func TestNotificationDuringCancelIsRejected(t *testing.T) {
	srv := &lateNotifier{late: make(chan error, 1)}
	_, addr := serve(t, EndpointConfig{Handler: srv})
	client, _ := serve(t, EndpointConfig{})
	got := make(chan string, 10)
	_, obs, err := client.Observe(t.Context(), addr, &Message{Code: GET}, func(m *Message) { got <- string(m.Payload) })
	if err != nil || obs == nil {
		t.Fatalf("observe: %v", err)
	}
	if err := obs.Cancel(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.late:
		if err != ErrReset {
			t.Fatalf("notification during the deregistration: %v, want ErrReset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notification during the deregistration was not rejected")
	}
	select {
	case p := <-got:
		t.Fatalf("observer got %q after Cancel", p)
	default:
	}
}
