package observe

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

// Protected (OSCORE) observations cannot be re-registered by the hub (RFC
// 8613 §4.1.3.5.1); when the origin stays quiet for a day (or its outer
// Max-Age, if longer) they are ended, so that the state of a vanished
// origin and client does not stay.

// registerProtected sends a CON FETCH with Observe=0 and an OSCORE option
// whose Partial IV is piv, as an OSCORE client registers, and returns the
// response.
func (r *rawClient) registerProtected(token string, piv byte) *coap.Message {
	r.t.Helper()
	m := &coap.Message{Type: coap.Confirmable, Code: coap.FETCH, MID: r.mid, Token: []byte(token), Payload: []byte{0xde, 0xad, piv}}
	r.mid++
	m.Options = m.Options.Insert(coap.OSCORE, []byte{0x09, piv})
	m.Options = m.Options.SetUint(coap.Observe, 0)
	r.send(m)
	return r.read(5 * time.Second)
}

// protectedNote is a notification as an OSCORE server sends it: outer
// Observe, the OSCORE option and ciphertext; maxAge < 0 for no outer
// Max-Age.
func protectedNote(seq uint32, maxAge int) *coap.Message {
	n := &coap.Message{Code: coap.Content, Payload: []byte{0xc1, byte(seq)}}
	n.Options = n.Options.SetUint(coap.Observe, seq)
	n.Options = n.Options.Insert(coap.OSCORE, []byte{0x01, byte(seq)})
	if maxAge >= 0 {
		n.Options = n.Options.SetUint(coap.MaxAge, uint32(maxAge))
	}
	return n
}

// protectedRig is a rig on a fake clock whose origin answers with the
// outer Max-Age maxAge (< 0: none), and a raw client with one protected
// observation registered, token "p1".
func protectedRig(t *testing.T, maxAge int) (*rig, *fakeClock, *rawClient) {
	t.Helper()
	clk := newFakeClock()
	r := newRig(t, Defaults(), coap.Params{}, WithClock(clk))
	r.setMaxAge(maxAge)
	c := newRawClient(t, r.proxy)
	if reg := c.registerProtected("p1", 1); !reg.Options.Has(coap.Observe) {
		t.Fatalf("not registered: %v", reg)
	}
	return r, clk, c
}

func (r *rig) setMaxAge(v int) {
	r.origin.mu.Lock()
	r.origin.maxAge = v
	r.origin.mu.Unlock()
}

// checkHub fails unless the hub holds the given number of observers and
// upstream observations, with its per-client reservations to match.
func (r *rig) checkHub(t *testing.T, observers, upstreams int, expired uint64) {
	t.Helper()
	s := r.hub.Stats()
	r.hub.mu.Lock()
	count, clients := r.hub.count, len(r.hub.perClient)
	r.hub.mu.Unlock()
	if s.Observers != observers || s.Upstreams != upstreams || s.ProtectedExpired != expired || count != observers || (clients == 0) != (observers == 0) {
		t.Fatalf("hub %+v, reserved %d for %d clients; want %d observers, %d upstreams, %d expired",
			s, count, clients, observers, upstreams, expired)
	}
}

func TestProtectedObservationEndsAfterADayWithoutNotification(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge int           // outer Max-Age of the first response, -1 for none
		quiet  time.Duration // how long it may stay quiet
	}{
		{"no Max-Age: a day", -1, protectedIdle + livenessMargin},
		{"Max-Age 90 s: a day all the same", 90, protectedIdle + livenessMargin},
		// RFC 8613 §4.1.3.1: an outer 0 only keeps proxies from caching.
		{"outer Max-Age 0: a day", 0, protectedIdle + livenessMargin},
		{"Max-Age over a day", 2 * 86400, 2*86400*time.Second + livenessMargin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, clk, c := protectedRig(t, tc.maxAge)
			r.checkHub(t, 1, 1, 0)

			clk.Advance(tc.quiet - time.Millisecond)
			r.checkHub(t, 1, 1, 0)
			clk.Advance(time.Millisecond)
			r.checkHub(t, 0, 0, 1)
			// The upstream observation is stopped as when the last
			// observer leaves, and a late notification gets an RST (RFC
			// 7641 §3.6).
			testutil.EventuallyWithin(t, 5*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })
			r.origin.mu.Lock()
			up := r.origin.regs[0]
			r.origin.mu.Unlock()
			rst := make(chan error, 1)
			if err := up.w.Notify(protectedNote(2, -1), false, func(err error) { rst <- err }); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-rst:
				if !errors.Is(err, coap.ErrReset) {
					t.Fatalf("late notification: %v, want an RST", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("late notification not answered with RST")
			}
			// The client is sent nothing: no made-up or replayed message.
			if m, err := c.tryRead(200 * time.Millisecond); err == nil {
				t.Fatalf("client got %v after the expiry", m)
			}
		})
	}
}

func TestProtectedObservationStaysWhileNotifiedAndEndsADayAfterTheLast(t *testing.T) {
	r, clk, c := protectedRig(t, 10)
	// Notifications every 20 hours, each with outer Max-Age 10: 100
	// hours in all, far past the first response's day.
	for seq := uint32(2); seq <= 6; seq++ {
		clk.Advance(20 * time.Hour)
		n := protectedNote(seq, 10)
		r.origin.push(t, n, false)
		got := c.read(5 * time.Second) // the hub has taken it
		if !got.Options.Equal(n.Options) || !bytes.Equal(got.Payload, n.Payload) {
			t.Fatalf("notification %d changed: %v %x", seq, got.Options, got.Payload)
		}
		if got.Type == coap.Confirmable {
			// At least one a day is (RFC 7641 §4.5).
			c.empty(coap.Acknowledgement, got.MID)
		}
		r.checkHub(t, 1, 1, 0)
	}
	// Quiet from now: a day after the last notification.
	clk.Advance(protectedIdle + livenessMargin - time.Millisecond)
	r.checkHub(t, 1, 1, 0)
	clk.Advance(time.Millisecond)
	r.checkHub(t, 0, 0, 1)
	testutil.EventuallyWithin(t, 5*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })
}

// An OSCORE client re-registers when its own Max-Age runs out (RFC 7641
// §3.3.1), with the same token and a new Partial IV (RFC 8613
// §4.1.3.5.1): after the expiry that is a fresh registration, passed on
// as it came, with a liveness timer of its own.
func TestProtectedReregistrationAfterExpiryIsFresh(t *testing.T) {
	r, clk, c := protectedRig(t, -1)
	clk.Advance(protectedIdle + livenessMargin)
	r.checkHub(t, 0, 0, 1)
	testutil.EventuallyWithin(t, 5*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })

	reg := c.registerProtected("p1", 2)
	if v, ok := reg.Options.Uint(coap.Observe); !ok || v != 1 || reg.Code != coap.Content {
		t.Fatalf("re-registration answered %v, want the origin's first response", reg)
	}
	if n := r.origin.registrations(); n != 2 {
		t.Fatalf("origin saw %d registrations, want 2", n)
	}
	r.checkHub(t, 1, 1, 1)
	r.origin.mu.Lock()
	up := r.origin.regs[1]
	r.origin.mu.Unlock()
	if v, _ := up.req.Options.Get(coap.OSCORE); !bytes.Equal(v, []byte{0x09, 2}) {
		t.Fatalf("origin got OSCORE option %x, want the re-registration's", v)
	}
	n := protectedNote(2, -1)
	r.origin.pushTo(t, up, n, false)
	if got := c.read(5 * time.Second); !bytes.Equal(got.Token, []byte("p1")) || !bytes.Equal(got.Payload, n.Payload) {
		t.Fatalf("notification after re-registration: %v", got)
	}
	// Its timer runs from that notification.
	clk.Advance(protectedIdle + livenessMargin - time.Millisecond)
	r.checkHub(t, 1, 1, 1)
	clk.Advance(time.Millisecond)
	r.checkHub(t, 0, 0, 2)
}

// A re-registration with the same token before the expiry replaces the
// entry (RFC 7641 §4.1): the old timer is gone and the new one counts
// from the new first response.
func TestProtectedReregistrationBeforeExpiryRestartsTheTimer(t *testing.T) {
	r, clk, c := protectedRig(t, -1)
	clk.Advance(40 * time.Second)
	if reg := c.registerProtected("p1", 2); !reg.Options.Has(coap.Observe) {
		t.Fatalf("not re-registered: %v", reg)
	}
	r.checkHub(t, 1, 1, 0)
	clk.Advance(protectedIdle + livenessMargin - 40*time.Second) // the first registration's deadline
	r.checkHub(t, 1, 1, 0)
	clk.Advance(40*time.Second - time.Millisecond)
	r.checkHub(t, 1, 1, 0)
	clk.Advance(time.Millisecond)
	r.checkHub(t, 0, 0, 1)
}
