package main

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"time"
)

// After a burst of work (a flood of requests) the message layer gives back
// what it held (coap's housekeeping), but the Go runtime learns that the
// memory is free only at its next collection, and keeps about twice the
// live heap of the last one: an idle daemon allocates so little that the
// next collection may be the runtime's forced one, two minutes later, and
// until then its memory stays at the burst's height. So once the daemon is
// quiet again with a heap goal a burst left high, or with the burst's
// garbage still on the heap, it asks for a collection; the runtime's
// scavenger then returns the pages at its own pace. A memory limit (GOMEMLIMIT) would not do: one low enough to bring
// an idle daemon down would throttle a busy one with collections.

const (
	// trimEvery is how often the heap is looked at.
	trimEvery = 10 * time.Second
	// quietRate is the allocation rate under which the daemon counts as
	// quiet: a flood allocates tens of MiB a second, an idle daemon a few
	// KiB (its probes, a scrape).
	quietRate = 1 << 20 // bytes a second
	// trimAbove is how far above its floor the heap goal must be for a
	// collection to be worth asking for.
	trimAbove = 8 << 20
	// trimGarbage is how much garbage (objects the last collection did
	// not find live) is worth a collection on its own. An idle daemon's
	// heap goal is 4 MiB, so it never gets that far by itself.
	trimGarbage = 4 << 20
)

// trimmer decides when to collect. floor is the lowest heap goal since
// the last collection it asked for: the goal of the daemon's quiet state.
type trimmer struct {
	floor  uint64
	allocs uint64 // bytes allocated since the start, at the last look
}

// look reports whether to collect now, given the heap goal, the garbage
// on the heap and the bytes allocated since the start: when the last
// interval was quiet (a burst is over, so a collection frees what it used
// rather than what it is still using) and either the goal is twice its
// floor or more, by trimAbove at least, or there is trimGarbage or more.
func (tr *trimmer) look(goal, garbage, allocs uint64, interval time.Duration) bool {
	quiet := allocs-tr.allocs < uint64(quietRate*interval.Seconds())
	tr.allocs = allocs
	if tr.floor == 0 || goal < tr.floor {
		tr.floor = goal
	}
	high := goal >= 2*tr.floor && goal-tr.floor >= trimAbove
	return quiet && (high || garbage >= trimGarbage)
}

// collected sets the floor to the goal after a collection: if the heap
// is still large, it holds what the daemon needs, and the next collection
// waits for another burst.
func (tr *trimmer) collected(goal uint64) { tr.floor = goal }

// heapGoal reads the runtime's heap goal, the garbage on the heap (what
// objects occupy beyond what the last collection found live) and the
// bytes allocated so far.
func heapGoal() (goal, garbage, allocs uint64) {
	s := []metrics.Sample{
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	metrics.Read(s)
	objects, live := s[1].Value.Uint64(), s[2].Value.Uint64()
	return s[0].Value.Uint64(), objects - min(live, objects), s[3].Value.Uint64()
}

// trimLoop looks at the heap every trimEvery until ctx ends, and collects
// once after each burst.
func trimLoop(ctx context.Context, log *slog.Logger) {
	var tr trimmer
	goal, garbage, allocs := heapGoal()
	tr.look(goal, garbage, allocs, trimEvery)
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		goal, garbage, allocs := heapGoal()
		if !tr.look(goal, garbage, allocs, trimEvery) {
			continue
		}
		// Two: the scavenger leaves alone the memory that was dense at
		// the last collection (it keeps huge pages whole), so the pages
		// the first frees become its to return only after the second.
		runtime.GC()
		runtime.GC()
		after, _, _ := heapGoal()
		tr.collected(after)
		log.Debug("collected after a burst", "component", "memory", "heap_goal_before", goal, "garbage", garbage, "heap_goal_after", after)
	}
}
