//go:build !race

package coap

import "testing"

// Allocation counts are asserted without the race detector; `make check`
// runs the tests named *NotAllocate* in a pass without -race.

// A small message is cloned in one allocation: a forwarding proxy clones
// every request and response it handles.
func TestSmallCloneDoesNotAllocateMoreThanOnce(t *testing.T) {
	req := &Message{Type: Confirmable, Code: GET, MID: 7, Token: []byte("12345678"),
		Options: Options{{ID: ProxyURI, Value: []byte("coap://127.0.0.1:5683/bench")}, {ID: HopLimit, Value: []byte{15}}}}
	var c *Message
	if n := testing.AllocsPerRun(100, func() { c = req.Clone() }); n != 1 {
		t.Fatalf("cloning a forwarded GET took %v allocations, want 1", n)
	}
	if c.MID != 7 || string(c.Token) != "12345678" || !c.Options.Equal(req.Options) {
		t.Fatalf("clone %v differs from %v", c, req)
	}
}
