package coap

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// The bounds on the requests an endpoint has in flight: MaxInflight in
// all, and MaxInflightPerClient for each client, so that one client (or
// one spoofer, with any number of source ports) cannot hold every slot
// while its exchanges wait out a silent upstream.

// clientKey names a client for its share: an IPv4 address, or the /64 of
// an IPv6 address. A host picks the interface identifiers of its /64 as
// it pleases (the low 64 bits, RFC 4291 §2.5.1; RFC 8981), so counting
// single IPv6 addresses would give one host any number of shares.
type clientKey struct{ hi, lo uint64 }

func clientOf(a netip.Addr) clientKey {
	a = a.Unmap()
	b := a.As16()
	k := clientKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	if a.Is6() {
		k.lo = 0
	}
	// An IPv4 key has ::ffff:0:0/96 in it, so its lo is never 0: it
	// cannot be the key of the IPv6 /64 it would otherwise share (::/64).
	return k
}

// slotOutcome is what inflight.take found.
type slotOutcome uint8

const (
	slotTaken slotOutcome = iota
	slotsFull             // MaxInflight requests in flight
	shareFull             // the client has MaxInflightPerClient in flight
)

// rebuildAt is the size from which a map that has emptied is made anew:
// a Go map keeps the room of the most entries it ever held, and a
// flood's peak would otherwise stay for as long as the endpoint runs.
const rebuildAt = 1024

// inflight counts the slots taken, in all and per client.
type inflight struct {
	mu        sync.Mutex
	n         int                 // guarded by mu: slots taken
	max       int                 // guarded by mu: MaxInflight
	perClient int                 // guarded by mu: MaxInflightPerClient; 0: no share
	clients   map[clientKey]int32 // guarded by mu: slots per client, never 0
	peak      int                 // guarded by mu: the most entries clients held since it was made
}

func (f *inflight) setLimits(total, perClient int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.max, f.perClient = total, perClient
	if f.clients == nil {
		f.clients = make(map[clientKey]int32)
	}
}

// take takes a slot for a request of client k, if there is one for it.
func (f *inflight) take(k clientKey) slotOutcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.clients[k]
	switch {
	case f.perClient > 0 && int(c) >= f.perClient:
		return shareFull
	case f.n >= f.max:
		return slotsFull
	}
	f.clients[k] = c + 1
	f.peak = max(f.peak, len(f.clients))
	f.n++
	return slotTaken
}

// give gives back a slot take gave client k.
func (f *inflight) give(k clientKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if c := f.clients[k]; c > 1 {
		f.clients[k] = c - 1
		return
	}
	delete(f.clients, k)
	if len(f.clients) == 0 && f.peak >= rebuildAt {
		f.clients, f.peak = make(map[clientKey]int32), 0
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// SetInflightLimits changes MaxInflight, MaxInflightPerClient and
// ShareMaxAge of a running endpoint (a reload), with the defaults of
// EndpointConfig for values not above 0. Requests in flight keep their
// slots; the new bounds apply to the next. The same bounds apply to the
// separate responses a client has not acknowledged yet.
func (e *Endpoint) SetInflightLimits(total, perClient int, shareMaxAge time.Duration) {
	if total <= 0 {
		total = defaultMaxInflight
	}
	e.shareMaxAge.Store(int64(maxAgeSeconds(shareMaxAge)))
	e.slots.setLimits(total, max(perClient, 0))
	e.unacked.setLimits(total, max(perClient, 0))
}

const (
	defaultMaxInflight = 4096
	defaultShareMaxAge = 3 * time.Second
)

// maxAgeSeconds is d as a Max-Age: whole seconds, rounded up, at least 1.
func maxAgeSeconds(d time.Duration) uint32 {
	if d <= 0 {
		d = defaultShareMaxAge
	}
	return uint32(max((d+time.Second-1)/time.Second, 1))
}

// busy answers a request refused a slot: 5.03 with Max-Age, the seconds
// after which to try again (RFC 7252 §5.9.3.4), and nothing else: the
// header, the request's token and two bytes of option, so that a spoofed
// request's victim gets about what was sent in its name.
func (w *responseWriter) busy(maxAge uint32) {
	resp := &Message{Code: ServiceUnavailable}
	resp.Options = resp.Options.SetUint(MaxAge, maxAge)
	w.WriteResponse(resp)
}
