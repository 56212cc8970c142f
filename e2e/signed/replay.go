package signed

import "container/list"

// replayKey names one counter sequence: one signing key, one resource.
type replayKey struct {
	kid string
	uri string
}

type replayEntry struct {
	key     replayKey
	counter uint64
}

// replayState is the bounded record of the highest counter accepted per
// (kid, resource). When full it evicts the least recently accepted entry and
// raises that kid's floor to the evicted counter: a resource with no entry
// must then beat the floor. Eviction can therefore reject a representation
// that was never seen (it is older than one evicted for another resource of
// the same signer), but it never lets a replay through.
//
// It is not safe for concurrent use; Verifier guards it.
type replayState struct {
	max     int
	entries map[replayKey]*list.Element // values are *replayEntry
	lru     *list.List                  // front is most recently accepted
	floor   map[string]uint64           // per kid; only kids with a key
}

func newReplayState(max int) *replayState {
	return &replayState{
		max:     max,
		entries: make(map[replayKey]*list.Element),
		lru:     list.New(),
		floor:   make(map[string]uint64),
	}
}

// last returns the counter a new representation must exceed, and whether
// any bound applies.
func (r *replayState) last(kid, uri string) (uint64, bool) {
	if e, ok := r.entries[replayKey{kid, uri}]; ok {
		return e.Value.(*replayEntry).counter, true
	}
	f, ok := r.floor[kid]
	return f, ok
}

// accept checks that counter is newer than everything accepted for (kid,
// uri) and records it. It returns false for a replay or reordering.
func (r *replayState) accept(kid, uri string, counter uint64) bool {
	if last, ok := r.last(kid, uri); ok && counter <= last {
		return false
	}
	k := replayKey{kid, uri}
	if e, ok := r.entries[k]; ok {
		e.Value.(*replayEntry).counter = counter
		r.lru.MoveToFront(e)
		return true
	}
	for r.lru.Len() >= r.max {
		oldest := r.lru.Back()
		ent := oldest.Value.(*replayEntry)
		if f, ok := r.floor[ent.key.kid]; !ok || ent.counter > f {
			r.floor[ent.key.kid] = ent.counter
		}
		delete(r.entries, ent.key)
		r.lru.Remove(oldest)
	}
	r.entries[k] = r.lru.PushFront(&replayEntry{key: k, counter: counter})
	return true
}

// forget drops everything recorded for kid.
func (r *replayState) forget(kid string) {
	delete(r.floor, kid)
	for e := r.lru.Front(); e != nil; {
		next := e.Next()
		if ent := e.Value.(*replayEntry); ent.key.kid == kid {
			delete(r.entries, ent.key)
			r.lru.Remove(e)
		}
		e = next
	}
}
