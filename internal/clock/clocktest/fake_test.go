package clocktest

import (
	"testing"
	"time"
)

// Reset re-arms a timer that fired or was stopped, and moves one that is
// pending; each runs once per Advance that reaches it.
func TestResetReArmsAndMovesTimers(t *testing.T) {
	c := New(time.Unix(0, 0))
	var fired int
	tm := c.AfterFunc(time.Second, func() { fired++ })
	c.Advance(time.Second)
	if fired != 1 {
		t.Fatalf("fired %d times, want 1", fired)
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reported it pending")
	}
	c.Advance(999 * time.Millisecond)
	if fired != 1 {
		t.Fatal("fired before its time")
	}
	if !tm.Reset(2 * time.Second) {
		t.Fatal("Reset of a pending timer reported it not pending")
	}
	c.Advance(time.Second)
	if fired != 1 {
		t.Fatal("fired at its old time after Reset moved it")
	}
	c.Advance(time.Second)
	if fired != 2 {
		t.Fatalf("fired %d times, want 2", fired)
	}
	tm.Stop()
	if p := c.Pending(); len(p) != 0 {
		t.Fatalf("pending %v after Stop", p)
	}
	tm.Reset(time.Second)
	if p := c.Pending(); len(p) != 1 || p[0] != time.Second {
		t.Fatalf("pending %v, want [1s]", p)
	}
	// A timer that re-arms itself from its function runs once per Advance.
	var self int
	var st interface{ Reset(time.Duration) bool }
	st = c.AfterFunc(time.Second, func() { self++; st.Reset(0) })
	c.Advance(time.Second)
	c.Advance(time.Second)
	if fired != 3 || self != 2 {
		t.Fatalf("fired %d and %d times, want 3 and 2", fired, self)
	}
}
