// Package clocktest is a manual clock for tests: time moves only when the
// test calls Advance, which runs the timers that fall due, in order.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/internal/clock"
)

// Fake is a clock.Clock that stands still until Advance.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer // guarded by mu: pending, in creation order
}

var _ clock.Clock = (*Fake)(nil)

type timer struct {
	c      *Fake
	at     time.Time // guarded by c.mu
	f      func()
	dead   bool // guarded by c.mu: stopped or fired
	queued bool // guarded by c.mu: in c.timers
}

// New returns a fake clock showing start.
func New(start time.Time) *Fake { return &Fake{now: start} }

// Now is the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f for d after the fake now.
func (c *Fake) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), f: f, queued: true}
	c.timers = append(c.timers, t)
	return t
}

// Stop cancels the call; it reports whether it was still pending.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.dead
	t.dead = true
	return was
}

// Reset has f called d after the fake now; it reports whether the call
// was still pending.
func (t *timer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := !t.dead
	t.dead, t.at = false, c.now.Add(d)
	if !t.queued {
		t.queued = true
		c.timers = append(c.timers, t)
	}
	return was
}

// Pending is the time left to each pending call, in creation order: a
// test waits for a component to arm its timer before it moves the clock.
func (c *Fake) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, t := range c.timers {
		if !t.dead {
			out = append(out, t.at.Sub(c.now))
		}
	}
	return out
}

// Advance moves the clock by d and runs, outside the lock and in time
// order, the functions that fell due.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*timer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.dead:
			t.queued = false
		case !t.at.After(c.now):
			t.dead, t.queued = true, false
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}
