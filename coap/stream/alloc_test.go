//go:build !race

package stream

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// Allocation counts are asserted without the race detector, which makes
// sync.Pool drop items at random; `make check` runs this file in a
// separate pass without -race.

// A response written to an open TCP connection, and read from a TCP
// connection at the other end, costs no allocation: the frame's buffer
// goes back to its pool, the write queue keeps its array, and the reader
// waits without a buffer and reads into a pooled chunk.
func TestWriteAndReadFrameDoNotAllocate(t *testing.T) {
	rd, wr := tcpPair(t)
	cfg := Config{}.withDefaults()
	var st counters
	var wg sync.WaitGroup
	c := newConn(newStreamTransport(wr), &cfg, &st, netip.AddrPort{}, false, "", t.Context(), &wg)
	defer c.closeWith(ErrClosed)
	in := newStreamTransport(rd)
	resp := &coap.Message{Code: coap.Content, Token: []byte{1, 2, 3, 4}, Payload: []byte("21.5")}
	resp.Options = resp.Options.SetUint(coap.MaxAge, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.sendMsg(resp, nil, true); err != nil {
			t.Fatal(err)
		}
		if _, err := in.readFrame(1 << 20); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("write and read of a frame: %v allocs/op, want 0", allocs)
	}
	if st.sent.Load() < 1000 {
		t.Fatalf("%d frames sent", st.sent.Load())
	}
}
