package observe

import (
	"fmt"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

// With notify_type "non", every con_every-th notification to an observer
// is a CON, and so is the next one once con_interval has passed (RFC 7641
// §4.5); the count starts again after each CON.
func TestCONEveryNthNotificationAndEveryInterval(t *testing.T) {
	clk := newFakeClock()
	cfg := Defaults()
	cfg.CONEvery = 3
	// Shorter than the liveness timer (Max-Age 60 s and 5 s), which would
	// register again.
	cfg.CONInterval = Duration{30 * time.Second}
	r := newRig(t, cfg, coap.Params{}, WithClock(clk))
	c := newRawClient(t, r.proxy)
	if reg := c.register("temp", "tok1"); !reg.Options.Has(coap.Observe) {
		t.Fatalf("not registered: %v", reg)
	}
	var types string
	for i := 1; i <= 8; i++ {
		if i == 5 {
			clk.Advance(30 * time.Second) // the interval passes: the next is a CON
		}
		r.origin.push(t, content(fmt.Sprintf("v%d", i), uint32(i+1)), false)
		n := c.read(5 * time.Second)
		if string(n.Payload) != fmt.Sprintf("v%d", i) {
			t.Fatalf("notification %d: %q", i, n.Payload)
		}
		if n.Type == coap.Confirmable {
			types += "C"
			c.empty(coap.Acknowledgement, n.MID)
		} else {
			types += "N"
		}
	}
	// v3 is the third since the registration, v5 the first after the
	// interval (the count alone would make it a NON), and the count
	// starts again after each: v8 is the third after v5.
	if want := "NNCNCNNC"; types != want {
		t.Fatalf("notification types %s, want %s", types, want)
	}
}

// An observer that is gone without deregistering is removed, and with
// it, as it was the last, the upstream observation: at once when its port
// is closed and the host reports it (ICMP port unreachable, with an ACK
// timeout of 30 s that could not pass for it), when its next CON goes
// unacknowledged if nothing reports it (a client that drops everything),
// or when it rejects that CON. Each is counted as its own cause.
func TestGoneObserverIsRemovedAndUpstreamCancelled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params coap.Params
		leave  func(t *testing.T, c *rawClient, r *rig)
		cause  func(Stats) uint64
		icmp   bool
	}{
		{"port closed: ICMP", coap.Params{AckTimeout: 30 * time.Second}, func(t *testing.T, c *rawClient, r *rig) {
			c.c.Close()
			r.origin.push(t, content("v1", 2), false)
		}, func(s Stats) uint64 { return s.Unreachable }, true},
		{"silent: the third notification is a CON that times out", coap.Params{AckTimeout: 20 * time.Millisecond, MaxRetransmit: 1}, func(t *testing.T, c *rawClient, r *rig) {
			for i := 1; i <= 3; i++ {
				r.origin.push(t, content(fmt.Sprintf("v%d", i), uint32(i+1)), false)
				n := c.read(5 * time.Second)
				if want := i == 3; (n.Type == coap.Confirmable) != want {
					t.Fatalf("notification %d is %v", i, n.Type)
				}
				// Never acknowledged, never rejected.
			}
		}, func(s Stats) uint64 { return s.Unconfirmed }, false},
		{"RST to the CON", coap.Params{AckTimeout: 30 * time.Second}, func(t *testing.T, c *rawClient, r *rig) {
			for i := 1; i <= 3; i++ {
				r.origin.push(t, content(fmt.Sprintf("v%d", i), uint32(i+1)), false)
				if n := c.read(5 * time.Second); n.Type == coap.Confirmable {
					c.empty(coap.Reset, n.MID)
				}
			}
		}, func(s Stats) uint64 { return s.Rejected }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.CONEvery = 3
			r := newRig(t, cfg, tc.params)
			c := newRawClient(t, r.proxy)
			if reg := c.register("temp", "tok1"); !reg.Options.Has(coap.Observe) {
				t.Fatalf("not registered: %v", reg)
			}
			tc.leave(t, c, r)
			testutil.EventuallyWithin(t, 10*time.Second, "observer removed", func() bool { return r.hub.Stats().Observers == 0 })
			testutil.EventuallyWithin(t, 10*time.Second, "upstream cancelled", func() bool { return r.origin.cancelled() == 1 })
			s := r.hub.Stats()
			if s.Deregistrations != 1 || tc.cause(s) != 1 || s.Rejected+s.Unconfirmed+s.Unreachable != 1 || s.Upstreams != 0 {
				t.Fatalf("stats %+v", s)
			}
			if es := r.pe.Stats(); tc.icmp && (es.Unreachable != 1 || es.Timeouts != 0) {
				t.Fatalf("proxy endpoint %+v: want the notification ended by ICMP, not by a time-out", es)
			}
		})
	}
}

// The observers of one resource take their CONs in turn: with con_every
// 3 and three observers, each notification goes as a CON to one of them,
// and each gets one CON in three notifications.
func TestObserversTakeTurnsWithCONs(t *testing.T) {
	cfg := Defaults()
	cfg.CONEvery = 3
	r := newRig(t, cfg, coap.Params{})
	clients := make([]*rawClient, 3)
	for i := range clients {
		clients[i] = newRawClient(t, r.proxy)
		if reg := clients[i].register("temp", fmt.Sprintf("tok%d", i)); !reg.Options.Has(coap.Observe) {
			t.Fatalf("client %d not registered: %v", i, reg)
		}
	}
	cons := make([]int, len(clients))
	for i := 1; i <= 3; i++ {
		r.origin.push(t, content(fmt.Sprintf("v%d", i), uint32(i+1)), false)
		perNotification := 0
		for k, c := range clients {
			n := c.read(5 * time.Second)
			if string(n.Payload) != fmt.Sprintf("v%d", i) {
				t.Fatalf("client %d: %q, want v%d", k, n.Payload, i)
			}
			if n.Type == coap.Confirmable {
				cons[k]++
				perNotification++
				c.empty(coap.Acknowledgement, n.MID)
			}
		}
		if perNotification != 1 {
			t.Fatalf("notification v%d went as a CON to %d observers, want 1", i, perNotification)
		}
	}
	for k, n := range cons {
		if n != 1 {
			t.Fatalf("observer %d got %d CONs in 3 notifications, want 1 (%v)", k, n, cons)
		}
	}
}
