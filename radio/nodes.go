package radio

import (
	"bytes"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// DefaultMaxNodes bounds the nodes a Conn keeps link statistics for.
const DefaultMaxNodes = 256

// NodeStats is what a Conn saw of one node, by the MAC address its frames
// came from or went to: for an operator asking which nodes are there and
// how well the gateway hears them.
type NodeStats struct {
	MAC mac.Addr
	// Addr is the IPv6 address of the node's last datagram, received or
	// sent; invalid until one decoded.
	Addr netip.Addr
	// LastHeard is when its last frame for this Conn arrived; zero if
	// none has (the gateway only sent to it).
	LastHeard time.Time
	RSSI      int8  // of its last frame, dBm; 127 when the radio does not tell
	LQI       uint8 // of its last frame; 0 when the radio does not tell
	FramesRx  uint64
	FramesTx  uint64 // frames the Link accepted for it
}

// nodeEntry is one node's statistics. The reader goroutine and WriteTo
// update them under nodeTable's read lock, so the fields are atomics.
type nodeEntry struct {
	mac       mac.Addr
	addr      atomic.Pointer[netip.Addr]
	heard     atomic.Int64  // UnixNano of the last received frame; 0: never
	signal    atomic.Uint32 // RSSI (low byte) and LQI (next byte) of that frame
	rx, tx    atomic.Uint64
	heardOnce atomic.Bool
}

// nodeTable keeps per-node link statistics for at most max nodes. A
// frame from a known node costs a read lock and a few atomic stores; a
// new node takes the write lock and, when the table is full, replaces the
// node heard from least recently, so frames from forged source addresses
// cannot grow it.
type nodeTable struct {
	max     int
	evicted atomic.Uint64

	mu    sync.RWMutex
	byMAC map[mac.Addr]*nodeEntry // guarded by mu
}

func newNodeTable(max int) *nodeTable {
	if max <= 0 {
		max = DefaultMaxNodes
	}
	return &nodeTable{max: max, byMAC: make(map[mac.Addr]*nodeEntry)}
}

func (t *nodeTable) entry(m mac.Addr) *nodeEntry {
	t.mu.RLock()
	e := t.byMAC[m]
	t.mu.RUnlock()
	if e != nil {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e = t.byMAC[m]; e != nil {
		return e
	}
	if len(t.byMAC) >= t.max {
		var old *nodeEntry
		for _, c := range t.byMAC {
			if old == nil || c.heard.Load() < old.heard.Load() {
				old = c
			}
		}
		delete(t.byMAC, old.mac)
		t.evicted.Add(1)
	}
	e = &nodeEntry{mac: m}
	t.byMAC[m] = e
	return e
}

// heard records a frame received from m.
func (t *nodeTable) heard(m mac.Addr, now time.Time, rssi int8, lqi uint8) {
	e := t.entry(m)
	e.rx.Add(1)
	e.heard.Store(now.UnixNano())
	e.heardOnce.Store(true)
	e.signal.Store(uint32(uint8(rssi)) | uint32(lqi)<<8)
}

// sent records n frames the Link accepted for m.
func (t *nodeTable) sent(m mac.Addr, n int) {
	t.entry(m).tx.Add(uint64(n))
}

// addr records the IPv6 address of a datagram from or to m; it allocates
// only when the address changes.
func (t *nodeTable) addr(m mac.Addr, a netip.Addr) {
	e := t.entry(m)
	if p := e.addr.Load(); p != nil && *p == a {
		return
	}
	e.addr.Store(&a)
}

func (t *nodeTable) snapshot() []NodeStats {
	t.mu.RLock()
	out := make([]NodeStats, 0, len(t.byMAC))
	for _, e := range t.byMAC {
		s := NodeStats{MAC: e.mac, RSSI: 127, FramesRx: e.rx.Load(), FramesTx: e.tx.Load()}
		if p := e.addr.Load(); p != nil {
			s.Addr = *p
		}
		if e.heardOnce.Load() {
			s.LastHeard = time.Unix(0, e.heard.Load())
			sig := e.signal.Load()
			s.RSSI, s.LQI = int8(uint8(sig)), uint8(sig>>8)
		}
		out = append(out, s)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b NodeStats) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.MAC.String()), []byte(b.MAC.String()))
	})
	return out
}

func (t *nodeTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byMAC)
}
