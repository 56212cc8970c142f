//go:build !race

package cache

import "testing"

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
