package plugins

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// A plugin's log lines (go-plugin's log, its stdout and stderr) pass a
// token bucket: logBurst lines at once, logRate a second after that. A
// broken or chatty plugin cannot flood gatewayd's log (and the journal
// behind it) that way; what it loses is counted.
const (
	logRate  = 50
	logBurst = 200
)

// logLimiter is one plugin's bucket, shared by all its log streams and
// kept across its restarts.
type logLimiter struct {
	now func() time.Time

	mu      sync.Mutex
	tokens  float64   // guarded by mu
	last    time.Time // guarded by mu: when tokens was last topped up
	pending uint64    // guarded by mu: dropped since the last notice

	dropped atomic.Uint64 // all lines dropped, for Stats
}

func newLogLimiter(now func() time.Time) *logLimiter {
	return &logLimiter{now: now, tokens: logBurst, last: now()}
}

// allow takes a token for one line. When it may pass and lines were
// dropped before it, it reports how many, once.
func (l *logLimiter) allow() (ok bool, droppedBefore uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(logBurst, l.tokens+d.Seconds()*logRate)
		l.last = now
	}
	if l.tokens < 1 {
		l.pending++
		l.dropped.Add(1)
		return false, 0
	}
	l.tokens--
	droppedBefore, l.pending = l.pending, 0
	return true, droppedBefore
}

// pass reports whether a line may be logged to log, and first logs how
// many were dropped before it, if any.
func (l *logLimiter) pass(log *slog.Logger) bool {
	ok, n := l.allow()
	if n > 0 {
		log.Warn("plugin log lines dropped: over the rate limit", "dropped", n, "rate", logRate, "burst", logBurst)
	}
	return ok
}
