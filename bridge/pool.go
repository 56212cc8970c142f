package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock"
)

// Bounds of the pools of origin connections (coap+tcp, coaps+tcp,
// coap+ws, coaps+ws, coaps): connections held at once, how long a dial
// and its handshake may take, and the backoff after a failed one.
const (
	maxOriginConns  = 256
	originDial      = 10 * time.Second
	originBackoff   = 250 * time.Millisecond
	originBackoffMx = 30 * time.Second
)

// pooledConn is a connection to one origin.
type pooledConn interface {
	// gone is closed when the connection ended.
	gone() <-chan struct{}
	Close() error
}

// pool holds one connection per origin, dialled on first use and shared
// by every exchange and observation to that origin. A failed dial is
// answered at once, with the same error, until its backoff has passed:
// an origin that is down costs a dial per backoff, not one per request.
// A connection nobody holds a lease on (no exchange, no observation) for
// idle is closed, and the next request dials again: an origin asked once
// does not cost a connection (and one of maxOriginConns) for ever.
type pool struct {
	ctx   context.Context // ends with the pool: dials and connections
	stop  context.CancelFunc
	wg    sync.WaitGroup // a watcher per connection, closing it once it ended
	clock clock.Clock

	mu    sync.Mutex
	slots map[originKey]*slot // guarded by mu
	idle  time.Duration       // guarded by mu; 0: never closed for idleness
	stats poolStats           // guarded by mu; Conns is counted when asked
}

// poolStats are a pool's counters (the gatewayd_origin_* metrics).
type poolStats struct {
	Conns        int    // connections open now
	Dials        uint64 // dials started
	DialFailures uint64 // dials (and their handshakes) that failed
	IdleCloses   uint64 // connections closed after origin_idle without a lease
}

// slot is an origin's entry: a connection, a dial in progress, or the
// last failure and when to try again.
// The fields of a slot are guarded by the pool's mu.
type slot struct {
	k       originKey
	ready   chan struct{} // closed when the dial ended
	c       pooledConn    // set when ready, nil after a failure
	err     error
	fails   int
	retryAt time.Time
	leases  int         // exchanges and observations using c
	timer   clock.Timer // closes c when it fires with leases 0 and gen unchanged
	gen     int         // bumped by each lease and each arming of timer
}

// newPool returns a pool whose connections close after idle without a
// lease (0: never), timed by clk.
func newPool(idle time.Duration, clk clock.Clock) *pool {
	p := &pool{slots: map[originKey]*slot{}, idle: idle, clock: clk}
	p.ctx, p.stop = context.WithCancel(context.Background())
	return p
}

// setIdle changes the idle time for connections that become idle from
// now (Reload).
func (p *pool) setIdle(d time.Duration) {
	p.mu.Lock()
	p.idle = d
	p.mu.Unlock()
}

// setOriginIdle sets origin_idle for the stream and the DTLS origins'
// connections that become idle from now on (Reload).
func (p *Proxy) setOriginIdle(d time.Duration) {
	p.streamUp.pool.setIdle(d)
	p.dtlsUp.pool.setIdle(d)
}

// leaseLocked takes a lease on s's connection, and returns its release,
// which may be called more than once.
func (p *pool) leaseLocked(s *slot) func() {
	s.leases++
	s.gen++ // a timer that fired meanwhile finds it changed
	if s.timer != nil {
		s.timer.Stop()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			s.leases--
			p.armLocked(s)
		})
	}
}

// armLocked starts s's idle timer once nothing holds its connection.
func (p *pool) armLocked(s *slot) {
	if s.leases > 0 || p.idle <= 0 || p.ctx.Err() != nil {
		return
	}
	s.gen++
	gen := s.gen
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = p.clock.AfterFunc(p.idle, func() { p.expire(s, gen) })
}

// expire closes s's connection if nothing used it since the timer of gen
// was armed, and forgets it: the next request dials again.
func (p *pool) expire(s *slot, gen int) {
	p.mu.Lock()
	if s.gen != gen || s.leases > 0 || s.c == nil {
		p.mu.Unlock()
		return
	}
	if p.slots[s.k] == s {
		delete(p.slots, s.k)
		p.stats.IdleCloses++
	}
	c := s.c
	p.mu.Unlock()
	c.Close()
}

// idleCloses is how many connections were closed for idleness.
func (p *pool) idleCloses() uint64 { return p.Stats().IdleCloses }

// Stats returns the pool's counters.
func (p *pool) Stats() poolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	for _, s := range p.slots {
		select {
		case <-s.ready:
			if s.c != nil {
				select {
				case <-s.c.gone():
				default:
					st.Conns++
				}
			}
		default:
		}
	}
	return st
}

// errPoolClosed is what a request gets once the proxy is closing.
var errPoolClosed = errors.New("bridge: origin connections closed")

// get returns the connection to k, dialling it with dial when there is
// none, and a lease on it that keeps it from closing for idleness until
// release is called: for the length of an exchange, or of an
// observation. Waiting for someone else's dial is bounded by ctx.
func (p *pool) get(ctx context.Context, k originKey, dial func(context.Context) (pooledConn, error)) (_ pooledConn, release func(), _ error) {
	for {
		p.mu.Lock()
		if p.ctx.Err() != nil {
			p.mu.Unlock()
			return nil, nil, errPoolClosed
		}
		s := p.slots[k]
		if s != nil {
			select {
			case <-s.ready:
				if s.c != nil {
					select {
					case <-s.c.gone():
						// Ended since: dial again, as if new.
						s = p.redial(k, 0)
					default:
						c, release := s.c, p.leaseLocked(s)
						p.mu.Unlock()
						return c, release, nil
					}
				} else if time.Now().Before(s.retryAt) {
					err := s.err
					p.mu.Unlock()
					return nil, nil, err
				} else {
					s = p.redial(k, s.fails)
				}
				if s == nil {
					p.mu.Unlock()
					return nil, nil, coap.Errorf(coap.BadGateway, "%d origin connections open", maxOriginConns)
				}
				p.mu.Unlock()
				p.dial(s, k, dial)
				continue
			default:
				p.mu.Unlock()
				select {
				case <-s.ready:
					continue
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
			}
		}
		s = p.redial(k, 0)
		p.mu.Unlock()
		if s == nil {
			return nil, nil, coap.Errorf(coap.BadGateway, "%d origin connections open", maxOriginConns)
		}
		p.dial(s, k, dial)
	}
}

// redial puts a new slot for k in place, nil when the pool is full.
func (p *pool) redial(k originKey, fails int) *slot {
	if _, ok := p.slots[k]; !ok && len(p.slots) >= maxOriginConns {
		p.pruneLocked()
		if len(p.slots) >= maxOriginConns {
			return nil
		}
	}
	s := &slot{k: k, ready: make(chan struct{}), fails: fails}
	p.slots[k] = s
	return s
}

// pruneLocked forgets the slots of ended connections and of failures
// whose backoff has passed.
func (p *pool) pruneLocked() {
	now := time.Now()
	for k, s := range p.slots {
		select {
		case <-s.ready:
		default:
			continue
		}
		if s.c == nil && now.After(s.retryAt) {
			delete(p.slots, k)
			continue
		}
		if s.c != nil {
			select {
			case <-s.c.gone():
				delete(p.slots, k)
			default:
			}
		}
	}
}

// dial runs a dial for s on the caller's goroutine, bounded by
// originDial and the pool's life, not by the request that started it:
// the requests that wait for it each wait as long as they may.
func (p *pool) dial(s *slot, k originKey, dial func(context.Context) (pooledConn, error)) {
	p.mu.Lock()
	p.stats.Dials++
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, originDial)
	defer cancel()
	c, err := dial(ctx)
	p.mu.Lock()
	if err == nil && p.ctx.Err() != nil {
		// Closed off the lock: a WebSocket connection's Close waits for
		// its closing handshake, and every get waits on mu meanwhile.
		p.mu.Unlock()
		c.Close()
		err = errPoolClosed
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	if err != nil {
		p.stats.DialFailures++
		s.fails++
		s.retryAt = time.Now().Add(min(originBackoff<<min(s.fails-1, 10), originBackoffMx))
		var ce *coap.Error
		if !errors.As(err, &ce) {
			err = &coap.Error{Code: coap.BadGateway, Diagnostic: diagnostic(fmt.Sprintf("%s://%v: %v", k.scheme, k.addr, err)), MaxAge: -1, Err: err}
		}
		s.err = err
	} else {
		s.c, s.fails = c, 0
		// Armed now, not at the first release: the requests that waited
		// for this dial may all have given up.
		p.armLocked(s)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-c.gone()
			c.Close() // what the connection holds besides itself
		}()
	}
	close(s.ready)
}

// diagnostic bounds a diagnostic payload (RFC 7252 §5.5.2) made from an
// error's text.
func diagnostic(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max]
	}
	return s
}

// Close closes every connection and waits for dials in progress to see
// it.
func (p *pool) Close() error {
	p.mu.Lock()
	p.stop()
	var conns []pooledConn
	for k, s := range p.slots {
		select {
		case <-s.ready:
			if s.c != nil {
				conns = append(conns, s.c)
			}
		default:
		}
		if s.timer != nil {
			s.timer.Stop()
		}
		delete(p.slots, k)
	}
	p.mu.Unlock()
	// At once: a WebSocket connection's Close waits for its closing
	// handshake, up to a second for an origin that does not answer.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
	p.wg.Wait()
	return nil
}

// len is how many origins have a slot: a connection, a dial or a failure.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots)
}
