package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
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
type pool struct {
	ctx  context.Context // ends with the pool: dials and connections
	stop context.CancelFunc
	wg   sync.WaitGroup // a watcher per connection, closing it once it ended

	mu    sync.Mutex
	slots map[originKey]*slot // guarded by mu
}

// slot is an origin's entry: a connection, a dial in progress, or the
// last failure and when to try again.
type slot struct {
	ready   chan struct{} // closed when the dial ended
	c       pooledConn    // set when ready, nil after a failure
	err     error
	fails   int
	retryAt time.Time
}

func newPool() *pool {
	p := &pool{slots: map[originKey]*slot{}}
	p.ctx, p.stop = context.WithCancel(context.Background())
	return p
}

// errPoolClosed is what a request gets once the proxy is closing.
var errPoolClosed = errors.New("bridge: origin connections closed")

// get returns the connection to k, dialling it with dial when there is
// none. Waiting for someone else's dial is bounded by ctx.
func (p *pool) get(ctx context.Context, k originKey, dial func(context.Context) (pooledConn, error)) (pooledConn, error) {
	for {
		p.mu.Lock()
		if p.ctx.Err() != nil {
			p.mu.Unlock()
			return nil, errPoolClosed
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
						c := s.c
						p.mu.Unlock()
						return c, nil
					}
				} else if time.Now().Before(s.retryAt) {
					err := s.err
					p.mu.Unlock()
					return nil, err
				} else {
					s = p.redial(k, s.fails)
				}
				if s == nil {
					p.mu.Unlock()
					return nil, coap.Errorf(coap.BadGateway, "%d origin connections open", maxOriginConns)
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
					return nil, ctx.Err()
				}
			}
		}
		s = p.redial(k, 0)
		p.mu.Unlock()
		if s == nil {
			return nil, coap.Errorf(coap.BadGateway, "%d origin connections open", maxOriginConns)
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
	s := &slot{ready: make(chan struct{}), fails: fails}
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
	ctx, cancel := context.WithTimeout(p.ctx, originDial)
	defer cancel()
	c, err := dial(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.ctx.Err() != nil {
		c.Close()
		err = errPoolClosed
	}
	if err != nil {
		s.fails++
		s.retryAt = time.Now().Add(min(originBackoff<<min(s.fails-1, 10), originBackoffMx))
		var ce *coap.Error
		if !errors.As(err, &ce) {
			err = &coap.Error{Code: coap.BadGateway, Diagnostic: diagnostic(fmt.Sprintf("%s://%v: %v", k.scheme, k.addr, err)), MaxAge: -1, Err: err}
		}
		s.err = err
	} else {
		s.c, s.fails = c, 0
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
