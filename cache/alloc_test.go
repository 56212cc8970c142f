//go:build !race

package cache

import (
	"context"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// Allocation counts are asserted without the race detector, which makes
// sync.Pool drop items at random; `make check` runs this file in a
// separate pass without -race.

func TestKeyAndLookupDoNotAllocate(t *testing.T) {
	c, r := hitFixture(t)
	now := c.now()
	allocs := testing.AllocsPerRun(1000, func() {
		k, ok := encodeKey(r)
		if !ok {
			t.Fatal("no key")
		}
		if _, found := c.lookup(r.Msg, &k, k.id(), hopLimit(r.Msg), now); !found {
			t.Fatal("miss")
		}
		k.release()
	})
	if allocs != 0 {
		t.Fatalf("key + lookup: %v allocs/op, want 0", allocs)
	}
}

// A hit allocates the answer and its options only: the request's key,
// which a miss hands to an answer that may come later, stays on the
// stack (reqKey.onHeap).
func TestHitDoesNotAllocateItsKey(t *testing.T) {
	c, r := hitFixture(t)
	stage := c.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		t.Fatal("miss")
		return nil
	}))
	w := &discard{}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if err := stage.ServeCoAP(ctx, w, r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Fatalf("hit: %v allocs/op, want 2 (the answer and its options)", allocs)
	}
}
