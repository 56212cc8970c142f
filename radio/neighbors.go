package radio

import (
	"container/list"
	"net/netip"
	"sync"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// DefaultMaxNeighbors bounds the learned part of the neighbour table.
const DefaultMaxNeighbors = 256

// Neighbor binds a node's IPv6 address to its MAC address.
type Neighbor struct {
	IP  netip.Addr
	MAC mac.Addr
}

// neighbors maps node IPv6 addresses to MAC addresses: static entries from
// the config, and entries learned from received frames in a bounded LRU.
// Addresses whose IID derives from the MAC address need neither.
type neighbors struct {
	static map[netip.Addr]mac.Addr // read-only after construction

	mu   sync.Mutex
	lru  *list.List                   // of Neighbor, most recent first; guarded by mu
	byIP map[netip.Addr]*list.Element // guarded by mu
	max  int
}

func newNeighbors(static []Neighbor, max int) *neighbors {
	if max <= 0 {
		max = DefaultMaxNeighbors
	}
	n := &neighbors{static: make(map[netip.Addr]mac.Addr, len(static)), lru: list.New(), byIP: make(map[netip.Addr]*list.Element), max: max}
	for _, s := range static {
		n.static[s.IP] = s.MAC
	}
	return n
}

func (n *neighbors) lookup(ip netip.Addr) (mac.Addr, bool) {
	if a, ok := n.static[ip]; ok {
		return a, true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.byIP[ip]; ok {
		n.lru.MoveToFront(e)
		return e.Value.(Neighbor).MAC, true
	}
	return mac.Addr{}, false
}

// learn records that ip was seen sending from m, evicting the least
// recently used entry when full. It reports whether it added an entry.
func (n *neighbors) learn(ip netip.Addr, m mac.Addr) bool {
	if _, ok := n.static[ip]; ok {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.byIP[ip]; ok {
		e.Value = Neighbor{IP: ip, MAC: m}
		n.lru.MoveToFront(e)
		return false
	}
	if n.lru.Len() >= n.max {
		old := n.lru.Back()
		delete(n.byIP, old.Value.(Neighbor).IP)
		n.lru.Remove(old)
	}
	n.byIP[ip] = n.lru.PushFront(Neighbor{IP: ip, MAC: m})
	return true
}

// forget drops a learned entry: the address was seen from the MAC its IID
// derives from, which needs no entry and must not be shadowed by one a
// spoofed frame left behind.
func (n *neighbors) forget(ip netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.byIP[ip]; ok {
		delete(n.byIP, ip)
		n.lru.Remove(e)
	}
}

func (n *neighbors) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lru.Len()
}

// iidOf returns the interface identifier of ip.
func iidOf(ip netip.Addr) [8]byte {
	a := ip.As16()
	return [8]byte(a[8:])
}

// withIID returns the address with the first 64 bits of p and the IID of m.
func withIID(p netip.Prefix, m mac.Addr) netip.Addr {
	a := p.Addr().As16()
	iid, _ := m.IID()
	copy(a[8:], iid[:])
	return netip.AddrFrom16(a)
}
