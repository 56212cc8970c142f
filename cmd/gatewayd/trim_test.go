package main

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// The trimmer asks for a collection once a burst is over and left the
// heap goal high or its garbage on the heap, and not otherwise: not
// during the burst, not for a small heap or a little garbage, and not
// again for a heap that stays large after the collection (the daemon
// needs it).
func TestTrimmerCollectsOnceAfterABurst(t *testing.T) {
	const MiB = 1 << 20
	type look struct {
		goal, garbage, allocated uint64 // allocated in the interval
		collect                  bool
		after                    uint64 // the goal after the collection, when one is made
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"idle", []look{{6 * MiB, 1 * MiB, 0, false, 0}, {6 * MiB, 2 * MiB, 100 << 10, false, 0}, {7 * MiB, 3 * MiB, 50 << 10, false, 0}}},
		{"a burst, then quiet", []look{
			{6 * MiB, 0, 0, false, 0},
			{30 * MiB, 20 * MiB, 200 * MiB, false, 0},   // flooding
			{40 * MiB, 1 * MiB, 300 * MiB, false, 0},    // a collection came at its end
			{40 * MiB, 1 * MiB, 1 * MiB, true, 8 * MiB}, // quiet: collect
			{8 * MiB, 0, 1 * MiB, false, 0},
		}},
		{"a small burst's garbage", []look{
			{6 * MiB, 0, 0, false, 0},
			{9 * MiB, 5 * MiB, 100 * MiB, false, 0}, // flooding
			{9 * MiB, 5 * MiB, 0, true, 6 * MiB},    // quiet: collect
			{6 * MiB, 0, 0, false, 0},
		}},
		{"a heap that stays large", []look{
			{6 * MiB, 0, 0, false, 0},
			{60 * MiB, 30 * MiB, 200 * MiB, false, 0},
			{60 * MiB, 30 * MiB, 0, true, 50 * MiB}, // the cache filled: it stays
			{50 * MiB, 0, 0, false, 0},
			{55 * MiB, 1 * MiB, 0, false, 0},
		}},
		{"a small heap doubling", []look{{4 * MiB, 0, 0, false, 0}, {9 * MiB, 3 * MiB, 0, false, 0}}},
		{"busy and high", []look{{6 * MiB, 0, 0, false, 0}, {40 * MiB, 30 * MiB, 100 * MiB, false, 0}, {40 * MiB, 30 * MiB, 100 * MiB, false, 0}}},
		{"a second burst after a collection", []look{
			{6 * MiB, 0, 0, false, 0},
			{40 * MiB, 0, 0, true, 7 * MiB},
			{40 * MiB, 0, 300 * MiB, false, 0},
			{40 * MiB, 0, 0, true, 7 * MiB},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr trimmer
			var allocs uint64
			for i, l := range tc.looks {
				allocs += l.allocated
				if got := tr.look(l.goal, l.garbage, allocs, trimEvery); got != l.collect {
					t.Fatalf("look %d (goal %d MiB, %d MiB garbage, %d MiB allocated): collect %v, want %v",
						i, l.goal/MiB, l.garbage/MiB, l.allocated/MiB, got, l.collect)
				}
				if l.collect {
					tr.collected(l.after)
				}
			}
		})
	}
}

// trimLoop ends with its context.
func TestTrimLoopEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { trimLoop(ctx, slog.New(slog.DiscardHandler)); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("trimLoop did not end with its context")
	}
}
