package bridge

import (
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// An Observe registration from an unverified address is answered with
// the challenge and registers nothing, here or at the origin: no
// notification goes to an address nobody showed receives there. Sent
// again with the Echo value, it registers, and notifications follow.
func TestObserveFromUnverifiedIsNotRegisteredUntilVerified(t *testing.T) {
	origin, uri := observableServer(t)
	p := startProxy(t, func(c *Config) { unverified(c); c.Proxy.Timeout = Duration{5 * time.Second} })
	a := newAmpPeer(t, 2)
	reg := func(tok string) *coap.Message {
		m := &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Token: []byte(tok), Options: proxyURI(uri)}
		m.Options = m.Options.SetUint(coap.Observe, 0)
		return m
	}
	req := reg("o1")
	resp := a.exchange(req, p.Addrs()[0])
	mustFit(t, "the answer to the registration", req, resp)
	echo, ok := resp.Options.Get(coap.Echo)
	if resp.Code != coap.Unauthorized || !ok || resp.Options.Has(coap.Observe) {
		t.Fatalf("got %v, want a 4.01 with Echo and no Observe", resp)
	}
	origin.mu.Lock()
	regs := origin.regs
	origin.mu.Unlock()
	if n := p.Hub().Stats().Observers; n != 0 || regs != 0 {
		t.Fatalf("%d observers at the hub, %d registrations at the origin: want none", n, regs)
	}
	if st := p.amp.Stats(); st.ObserveChallenges != 1 {
		t.Fatalf("stats %+v", st)
	}
	again := reg("o2")
	again.Options = again.Options.Set(coap.Echo, echo)
	first := a.exchange(again, p.Addrs()[0])
	if first.Code != coap.Content || !first.Options.Has(coap.Observe) {
		t.Fatalf("with the Echo value: %v", first)
	}
	origin.notify()
	if n := a.recv(); string(n.Token) != "o2" || !n.Options.Has(coap.Observe) {
		t.Fatalf("notification %v", n)
	}
}
