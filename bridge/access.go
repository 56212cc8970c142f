package bridge

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// maxBuckets bounds the rate limiter's memory: past it, idle (full)
// buckets are forgotten, at most once a second; while the table stays
// full, newcomers share one overflow bucket.
const maxBuckets = 10000

type bucket struct {
	tokens float64
	last   time.Time
}

// limiter is a token bucket per client address (RFC 8516 4.29 when empty).
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket // guarded by mu
	overflow  bucket                 // guarded by mu: shared by clients that found the table full
	lastPrune time.Time              // guarded by mu
}

func (l *limiter) allow(a netip.Addr) (ok bool, retry time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[a]
	if b == nil {
		if len(l.buckets) >= maxBuckets && now.Sub(l.lastPrune) >= time.Second {
			l.prune(now)
			l.lastPrune = now
		}
		if len(l.buckets) < maxBuckets {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[a] = b
		} else {
			if l.overflow.last.IsZero() {
				l.overflow = bucket{tokens: l.burst, last: now}
			}
			b = &l.overflow
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

func (l *limiter) prune(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}

// newAccess is the first stage: client prefixes are enforced by the
// endpoint's Accept filter (refused datagrams cost nothing); here each
// client gets a token bucket.
func newAccess(cfg ProxyConfig) stage {
	if cfg.Rate <= 0 {
		return func(next coap.Handler) coap.Handler { return next }
	}
	l := &limiter{rate: cfg.Rate, burst: float64(cfg.Burst), now: time.Now, buckets: map[netip.Addr]*bucket{}}
	return func(next coap.Handler) coap.Handler {
		return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			if ok, retry := l.allow(r.Peer.Addr()); !ok {
				// RFC 8516 §2: 4.29 with Max-Age saying when to try again.
				e := coap.Errorf(coap.TooManyRequests, "rate limit")
				e.MaxAge = int(retry/time.Second) + 1
				return e
			}
			return next.ServeCoAP(ctx, w, r)
		})
	}
}
