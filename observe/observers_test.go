package observe

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestIDOf(t *testing.T) {
	peer := netip.MustParseAddrPort("[fe80::1%eth0]:5683")
	r := &coap.Request{Msg: &coap.Message{Token: []byte{1, 2, 3}}, Peer: peer, Secure: true}
	id, ok := idOf(r)
	if !ok || id.peer() != peer || id.tokLen != 3 || id.token != [8]byte{1, 2, 3} || id.kind != kindSecure {
		t.Fatalf("idOf = %+v, %v", id, ok)
	}
	// Tokens 010203 and 01020300 differ, though both fill the array alike.
	r2 := &coap.Request{Msg: &coap.Message{Token: []byte{1, 2, 3, 0}}, Peer: peer, Secure: true}
	if id2, _ := idOf(r2); id2 == id {
		t.Fatal("tokens of different lengths give the same ID")
	}
	// RFC 7252 §3: at most 8 bytes.
	r.Msg.Token = make([]byte, coap.MaxTokenLen+1)
	if _, ok := idOf(r); ok {
		t.Fatal("a 9-byte token gave an ID")
	}
}

// TestObserverSetSharedHash checks the chain of observers whose IDs share
// a hash: IDs that differ only in the zone do.
func TestObserverSetSharedHash(t *testing.T) {
	s := newObserverSet()
	var obs []*observer
	for _, a := range []string{"[fe80::1%a]:1", "[fe80::1%b]:1", "[fe80::1]:1", "[fe80::1%c]:1"} {
		r := &coap.Request{Msg: &coap.Message{Token: []byte("tk")}, Peer: netip.MustParseAddrPort(a)}
		id, _ := idOf(r)
		obs = append(obs, &observer{id: id})
	}
	if s.hash(&obs[0].id) != s.hash(&obs[1].id) {
		t.Fatal("the zone changed the hash")
	}
	for _, o := range obs {
		s.put(o)
	}
	check := func(want ...*observer) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("len %d, want %d", s.len(), len(want))
		}
		for _, o := range want {
			if got := s.get(o.id); got != o {
				t.Fatalf("get(%v) = %p, want %p", o.id.peer(), got, o)
			}
		}
	}
	check(obs...)
	s.del(obs[1]) // inside the chain
	if s.get(obs[1].id) != nil {
		t.Fatal("deleted observer still found")
	}
	check(obs[0], obs[2], obs[3])
	s.del(obs[1]) // not in the set: nothing happens
	check(obs[0], obs[2], obs[3])
	s.del(obs[3]) // the chain's head (the last put)
	check(obs[0], obs[2])
	// put replaces an observer with the same ID.
	o := &observer{id: obs[0].id}
	s.put(o)
	check(o, obs[2])
	s.del(obs[0]) // replaced: not in the set any more
	check(o, obs[2])
	s.del(o)
	s.del(obs[2])
	check()
	if len(s.m) != 0 {
		t.Fatalf("%d map entries left", len(s.m))
	}
}

// TestObserverSize keeps the per-observer state small: the hub holds one
// observer, one ID and a 16-byte map slot per observer.
func TestObserverSize(t *testing.T) {
	// The bounds are for 64-bit platforms; on 32-bit ones pointers and
	// ints take half, so the same bounds hold with room to spare.
	if n := unsafe.Sizeof(obsID{}); n > 40 {
		t.Errorf("obsID is %d bytes, want at most 40", n)
	}
	if n := unsafe.Sizeof(observer{}); n > 96 {
		t.Errorf("observer is %d bytes, want at most 96", n)
	}
}
