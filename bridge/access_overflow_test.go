package bridge

import (
	"net/netip"
	"testing"
	"time"
)

// Once maxBuckets clients hold a bucket that is not full, a newcomer must
// still be rate limited (access.go says its bucket is then "shared"); it
// must not get a fresh, full bucket on every request.
func TestRateLimitHoldsForNewcomersWhenBucketTableIsFull(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &limiter{rate: 1, burst: 2, now: func() time.Time { return now }, buckets: map[netip.Addr]*bucket{}}
	base := netip.MustParseAddr("2001:db8::").As16()
	for i := 0; i < maxBuckets; i++ {
		a := base
		a[14], a[15] = byte(i>>8), byte(i)
		l.allow(netip.AddrFrom16(a)) // one token spent: not idle, not pruned
	}
	newcomer := netip.MustParseAddr("2001:db8:1::1")
	allowed := 0
	for i := 0; i < 100; i++ {
		if ok, _ := l.allow(newcomer); ok {
			allowed++
		}
	}
	if allowed > 2 {
		t.Fatalf("newcomer with burst 2 got %d of 100 requests through at one instant", allowed)
	}
}
