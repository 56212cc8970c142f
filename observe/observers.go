package observe

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"

	"github.com/opaque-edge/gatewayd/coap"
)

// obsID names an observer: the client's endpoint and token (RFC 7641
// §3.6, §4.1), and the kind of transport: its security, which keeps a
// coap and a coaps client apart, and whether it is a stream (RFC 8323),
// which keeps a TCP client apart from a UDP one at the same address and
// port. The hub keeps one per observer, so it is a small
// fixed-size value rather than a string: a token has at most 8 bytes (RFC
// 7252 §3), and address and port are held apart so that the port, the
// flags and the token share the padding a netip.AddrPort would leave
// (40 bytes on 64-bit platforms).
type obsID struct {
	addr   netip.Addr
	port   uint16
	kind   uint8 // kindSecure | kindStream
	tokLen uint8
	token  [coap.MaxTokenLen]byte
}

// Kinds of transport an obsID tells apart.
const (
	kindSecure = 1 << iota
	kindStream
)

// idOf names the observer a request registers or deregisters. ok is false
// for a token longer than RFC 7252 §3 allows, which the message layer
// never passes on (it is a message format error) and which nobody could
// be notified with.
func idOf(r *coap.Request) (id obsID, ok bool) {
	if len(r.Msg.Token) > coap.MaxTokenLen {
		return obsID{}, false
	}
	id = obsID{addr: r.Peer.Addr(), port: r.Peer.Port(), tokLen: uint8(len(r.Msg.Token))}
	if r.Secure {
		id.kind |= kindSecure
	}
	if r.Conn != 0 {
		id.kind |= kindStream
	}
	copy(id.token[:], r.Msg.Token)
	return id, true
}

// peer is the client's endpoint.
func (id *obsID) peer() netip.AddrPort { return netip.AddrPortFrom(id.addr, id.port) }

// observerSet finds observers by ID. A map keyed by obsID would hold
// every ID twice, as the map's key and in the observer; this one maps the
// ID's 64-bit hash to the observer and keeps the ID only in the observer,
// so a map slot is 16 bytes instead of 48. Observers whose IDs share a
// hash (IDs that differ only in an IPv6 zone or in an IPv4 address being
// IPv4-mapped, or a chance collision) are chained through
// observer.nextInSet.
type observerSet struct {
	seed maphash.Seed
	m    map[uint64]*observer
	n    int
}

func newObserverSet() observerSet {
	return observerSet{seed: maphash.MakeSeed(), m: make(map[uint64]*observer)}
}

// hash covers the ID's bytes: everything but the zone and the address
// family, so that it needs no allocation.
func (s *observerSet) hash(id *obsID) uint64 {
	var b [16 + 2 + 2 + coap.MaxTokenLen]byte
	a := id.addr.As16()
	copy(b[:], a[:])
	binary.BigEndian.PutUint16(b[16:], id.port)
	b[18] = id.tokLen
	b[19] = id.kind
	copy(b[20:], id.token[:])
	return maphash.Bytes(s.seed, b[:])
}

// get returns the observer with this ID, or nil.
func (s *observerSet) get(id obsID) *observer {
	for o := s.m[s.hash(&id)]; o != nil; o = o.nextInSet {
		if o.id == id {
			return o
		}
	}
	return nil
}

// put adds o, replacing an observer with the same ID.
func (s *observerSet) put(o *observer) {
	if old := s.get(o.id); old != nil {
		s.del(old)
	}
	k := s.hash(&o.id)
	o.nextInSet = s.m[k]
	s.m[k] = o
	s.n++
}

// del removes o if it is in the set.
func (s *observerSet) del(o *observer) {
	k := s.hash(&o.id)
	head := s.m[k]
	if head == o {
		if o.nextInSet != nil {
			s.m[k] = o.nextInSet
		} else {
			delete(s.m, k)
		}
		o.nextInSet = nil
		s.n--
		return
	}
	for p := head; p != nil; p = p.nextInSet {
		if p.nextInSet == o {
			p.nextInSet, o.nextInSet = o.nextInSet, nil
			s.n--
			return
		}
	}
}

// len is the number of observers in the set.
func (s *observerSet) len() int { return s.n }

// clear empties the set.
func (s *observerSet) clear() {
	clear(s.m)
	s.n = 0
}
