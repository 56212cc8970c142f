package observe

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/coap"
)

// An observer that never acknowledges anything (the owner of an address
// someone else registered with) gets at most con_every notifications: the
// con_every-th is a CON, nothing else is sent while it is retransmitted,
// and when it goes unacknowledged the observer is removed. However many
// notifications the origin sends, the address gets con_every messages and
// the CON's retransmissions, then nothing.
func TestSilentObserverGetsBoundedNotificationsThenNothing(t *testing.T) {
	const conEvery, retransmit = 5, 2
	cfg := Defaults()
	cfg.CONEvery = conEvery
	r := newRig(t, cfg, coap.Params{AckTimeout: 50 * time.Millisecond, MaxRetransmit: retransmit})
	c := newRawClient(t, r.proxy)
	if reg := c.register("temp", "silent"); !reg.Options.Has(coap.Observe) {
		t.Fatalf("not registered: %v", reg)
	}
	// Each notification is read before the next is pushed, until the CON.
	seq := uint32(2)
	push := func() {
		r.origin.push(t, content(fmt.Sprintf("v%d", seq), seq), false)
		seq++
	}
	var types string
	for !bytes.HasSuffix([]byte(types), []byte("C")) {
		if len(types) > conEvery {
			t.Fatalf("no CON among %d notifications (%s)", len(types), types)
		}
		push()
		n := c.read(5 * time.Second)
		if string(n.Token) != "silent" {
			t.Fatalf("unexpected %v", n)
		}
		types += map[bool]string{true: "C", false: "N"}[n.Type == coap.Confirmable]
	}
	if len(types) != conEvery {
		t.Fatalf("notifications %s: the CON came as number %d, want %d", types, len(types), conEvery)
	}
	// The origin goes on; the observer is busy with its CON, then gone.
	for range 20 {
		push()
	}
	testutil.EventuallyWithin(t, 10*time.Second, "the silent observer removed", func() bool { return r.hub.Stats().Observers == 0 })
	for range 20 {
		push()
	}
	// A plain request's answer comes after anything still on its way.
	sentinel := get("temp")
	sentinel.Type, sentinel.MID, sentinel.Token = coap.NonConfirmable, 999, []byte("end")
	c.send(sentinel)
	var after []string
	for {
		m := c.read(5 * time.Second)
		if string(m.Token) == "end" {
			break
		}
		after = append(after, fmt.Sprintf("%v %q", m.Type, m.Payload))
	}
	// Only the CON's retransmissions: retransmit copies of it.
	if len(after) != retransmit {
		t.Fatalf("after the CON the address got %d messages, want its %d retransmissions: %v", len(after), retransmit, after)
	}
	if st := r.hub.Stats(); st.Unconfirmed != 1 {
		t.Fatalf("stats %+v", st)
	}
}
