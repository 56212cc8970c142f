package mqtt

import "sync"

// item is one representation waiting for its PUBACK.
type item struct {
	seq         uint64
	topic       string
	payload     []byte
	contentType string
	cf          int // -1: none
	retain      bool
}

// queue is a bounded FIFO of items not yet acknowledged by the broker. Push
// never blocks (it runs on a CoAP reader goroutine): when full it drops the
// oldest item. The head stays in place while it is being published and is
// removed only by done, so a publish cut off by a broker restart is sent
// again.
type queue struct {
	mu      sync.Mutex
	items   []item        // guarded by mu: ring buffer of cap entries
	head    int           // guarded by mu
	n       int           // guarded by mu
	nextSeq uint64        // guarded by mu
	dropped uint64        // guarded by mu
	ready   chan struct{} // buffered 1: signalled on push
}

func newQueue(size int) *queue {
	return &queue{items: make([]item, size), ready: make(chan struct{}, 1)}
}

// push appends it, dropping the oldest entry when full.
func (q *queue) push(it item) {
	q.mu.Lock()
	it.seq = q.nextSeq
	q.nextSeq++
	if q.n == len(q.items) {
		q.items[q.head] = item{}
		q.head = (q.head + 1) % len(q.items)
		q.n--
		q.dropped++
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// peek returns the oldest item.
func (q *queue) peek() (item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return item{}, false
	}
	return q.items[q.head], true
}

// done removes the item with seq if it is still the head (it may have
// been dropped for newer ones meanwhile).
func (q *queue) done(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n > 0 && q.items[q.head].seq == seq {
		q.items[q.head] = item{}
		q.head = (q.head + 1) % len(q.items)
		q.n--
	}
}

func (q *queue) stats() (length int, dropped uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, q.dropped
}
