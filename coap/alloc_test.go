//go:build !race

package coap

import (
	"runtime"
	"testing"
)

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

// bytesPerRun is testing.AllocsPerRun for bytes: the average a call of f
// allocates, after one warming call.
func bytesPerRun(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// A clone takes the smallest box it fits: a proxy clones every response
// it forwards once for itself and once more in its client's endpoint,
// and every request once, so each size class a clone goes up costs every
// forwarded request that many bytes (BenchmarkForwardGET in bridge).
func TestSmallCloneDoesNotAllocateMoreThanItsSizeClass(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *Message
		max  uint64
	}{
		{"response with Max-Age", &Message{Type: Acknowledgement, Code: Content, Token: []byte("12345678"),
			Options: Options{{ID: MaxAge, Value: []byte{0}}}, Payload: []byte("21.5")}, 144},
		{"forwarded GET", &Message{Type: Confirmable, Code: GET, Token: []byte("12345678"),
			Options: Options{{ID: ProxyURI, Value: []byte("coap://127.0.0.1:5683/bench")}}}, 192},
		{"response with Content-Format and Max-Age", &Message{Type: Acknowledgement, Code: Content, Token: []byte("12345678"),
			Options: Options{{ID: ContentFormat, Value: []byte{50}}, {ID: MaxAge, Value: []byte{60}}}, Payload: []byte(`{"t":21.5}`)}, 192},
		{"response with ETag, Content-Format and Max-Age", &Message{Type: Acknowledgement, Code: Content, Token: []byte("12345678"),
			Options: Options{{ID: ETag, Value: []byte("abcdefgh")}, {ID: ContentFormat, Value: []byte{50}}, {ID: MaxAge, Value: []byte{60}}}, Payload: []byte(`{"t":21.5}`)}, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *Message
			if n := bytesPerRun(1000, func() { c = tc.m.Clone() }); n > tc.max {
				t.Errorf("a clone took %d bytes, want at most %d", n, tc.max)
			}
			if c.Type != tc.m.Type || string(c.Token) != string(tc.m.Token) || !c.Options.Equal(tc.m.Options) || string(c.Payload) != string(tc.m.Payload) {
				t.Fatalf("clone %v differs from %v", c, tc.m)
			}
		})
	}
}
