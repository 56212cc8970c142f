// Package clock is the source of time that components with timers take,
// so that tests can drive them with a fake one (clocktest.Fake) instead of
// sleeping.
package clock

import "time"

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	Stop() bool
	// Reset has the call made d from now, whether it was pending, made
	// or stopped; it reports whether it was pending. As time.Timer's.
	Reset(d time.Duration) bool
}

// System is the real clock.
var System Clock = system{}

type system struct{}

func (system) Now() time.Time { return time.Now() }

func (system) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
