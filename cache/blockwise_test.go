package cache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// blockSZX is the block size of these tests' origin: 16 bytes (SZX 0).
const blockSZX = 0

func block2(num, more, szx uint32) coap.Option {
	return uintOpt(coap.Block2, num<<4|more<<3|szx)
}

// versions is an origin's resource that changes: each version is a body
// and the ETag it is served with ("" for none). It serves the current one
// block-wise (RFC 7959 §2.4) in 16-byte blocks, block num with Max-Age
// maxAge(num), and answers a request ETag that is the current one with
// 2.03 (RFC 7252 §5.10.6.2).
type versions struct {
	mu     sync.Mutex
	body   string // guarded by mu
	tag    string // guarded by mu
	maxAge func(num uint32) int
}

func (v *versions) set(body, tag string) {
	v.mu.Lock()
	v.body, v.tag = body, tag
	v.mu.Unlock()
}

func (v *versions) serve(_ int, req *coap.Message) *coap.Message {
	v.mu.Lock()
	body, tag := v.body, v.tag
	v.mu.Unlock()
	var num uint32
	if b, ok := req.Options.Uint(coap.Block2); ok {
		num = b >> 4
	}
	age := 60
	if v.maxAge != nil {
		age = v.maxAge(num)
	}
	if tag != "" && hasETag(req, []byte(tag)) {
		m := &coap.Message{Code: coap.Valid}
		m.Options = m.Options.Insert(coap.ETag, []byte(tag)).SetUint(coap.MaxAge, uint32(age))
		return m
	}
	size := uint32(16) << blockSZX
	start := min(num*size, uint32(len(body)))
	end := min(start+size, uint32(len(body)))
	var more uint32
	if end < uint32(len(body)) {
		more = 1
	}
	m := content(body[start:end], 0, tag, age)
	m.Options = m.Options.Insert(coap.Block2, block2(num, more, blockSZX).Value)
	return m
}

// fetch reassembles the representation through the stage as a client
// does: block after block until M is 0, each request with Block2 (§2.4).
// It fails when an ETag changes between blocks: a client that compares
// them would have to start again.
func (f *fixture) fetch(t *testing.T, extra ...coap.Option) string {
	t.Helper()
	var body []byte
	var first []byte
	for num := uint32(0); ; num++ {
		resp := f.do(t, get(target, append([]coap.Option{block2(num, 0, blockSZX)}, extra...)...))
		if resp.Code != coap.Content {
			t.Fatalf("block %d: %v", num, resp.Code)
		}
		tag, _ := resp.Options.Get(coap.ETag)
		if num == 0 {
			first = tag
		} else if !bytes.Equal(tag, first) {
			t.Fatalf("block %d has ETag %q, block 0 had %q: blocks of two representations (RFC 7959 §2.4)", num, tag, first)
		}
		body = append(body, resp.Payload...)
		b, _ := resp.Options.Uint(coap.Block2)
		if b>>3&1 == 0 {
			return string(body)
		}
	}
}

const (
	oldBody = "old representation, forty bytes long."
	newBody = "NEW REPRESENTATION, FORTY BYTES LONG!"
)

func TestRFC7959_2_10NewFirstBlockDropsTheOldRepresentationsBlocks(t *testing.T) {
	v := &versions{body: oldBody, tag: "v1", maxAge: func(num uint32) int {
		if num == 0 {
			return 10 // block 0 goes stale first, as it was fetched first
		}
		return 60
	}}
	f := newFixture(t, Defaults(), v.serve)
	if got := f.fetch(t); got != oldBody {
		t.Fatalf("first fetch %q", got)
	}
	calls := f.o.count()
	v.set(newBody, "v2")
	f.clk.Advance(11 * time.Second)
	// Block 0 is validated with v1 and comes back as the 2.05 of v2.
	b0 := f.do(t, get(target, block2(0, 0, blockSZX)))
	if tag, _ := b0.Options.Get(coap.ETag); string(tag) != "v2" || f.o.count() != calls+1 {
		t.Fatalf("block 0: ETag %q after %d calls", tag, f.o.count())
	}
	b1 := f.do(t, get(target, block2(1, 0, blockSZX)))
	if tag, _ := b1.Options.Get(coap.ETag); string(tag) != "v2" || string(b1.Payload) != newBody[16:32] {
		t.Fatalf("block 1 after a new block 0: ETag %q %q, want v2's from the origin", tag, b1.Payload)
	}
	if f.o.count() != calls+2 {
		t.Fatal("block 1 must go to the origin")
	}
	if got := f.fetch(t); got != newBody {
		t.Fatalf("second fetch %q", got)
	}
	if s := f.c.Stats(); s.Superseded != 2 {
		t.Fatalf("superseded %d, want blocks 1 and 2 of v1", s.Superseded)
	}
}

// The Observe hub stores a notification, which carries the first block
// of the new representation (RFC 7641 §3.4, RFC 7959 §3), under the
// registration's key: the old representation's other blocks go with it.
func TestRFC7959_3NotificationWithNewFirstBlockDropsOldBlocks(t *testing.T) {
	v := &versions{body: oldBody, tag: "v1"}
	f := newFixture(t, Defaults(), v.serve)
	f.fetch(t)
	calls := f.o.count()
	v.set(newBody, "v2")
	note := v.serve(0, &coap.Message{Code: coap.GET})
	note.Options = note.Options.SetUint(coap.Observe, 3)
	// The registration had no Block2; its key is still the blocks' Rep.
	if !f.c.Store(mustKey(t, get(target)), note) {
		t.Fatal("notification not stored")
	}
	if got := f.fetch(t); got != newBody {
		t.Fatalf("fetch after the notification %q", got)
	}
	if f.o.count() != calls+3 {
		t.Fatalf("%d calls, want blocks 0, 1 and 2 of v2 from the origin", f.o.count()-calls)
	}
}

func TestRFC7959_2_10OtherRepresentationDropsBlocksEvenUnstored(t *testing.T) {
	for _, tc := range []struct {
		name string
		// news tells the cache of v2: a response it does not store, or a
		// 2.03 for a client's own ETag.
		news func(f *fixture, v *versions)
	}{
		{"2.05 with Max-Age 0", func(f *fixture, v *versions) {
			v.maxAge = func(uint32) int { return 0 }
			f.do(t, get(target, block2(0, 0, blockSZX), opt(coap.ETag, "v0")))
			v.maxAge = nil
		}},
		{"2.05 over max_entry_bytes", func(f *fixture, v *versions) {
			f.c.cfg.MaxEntryBytes = 10
			f.do(t, get(target, block2(0, 0, blockSZX), opt(coap.ETag, "v0")))
			f.c.cfg.MaxEntryBytes = Defaults().MaxEntryBytes
		}},
		{"2.03 for the client's ETag", func(f *fixture, v *versions) {
			if r := f.do(t, get(target, block2(0, 0, blockSZX), opt(coap.ETag, "v2"))); r.Code != coap.Valid {
				t.Fatalf("got %v", r.Code)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &versions{body: oldBody, tag: "v1"}
			f := newFixture(t, Defaults(), v.serve)
			f.fetch(t)
			v.set(newBody, "v2")
			tc.news(f, v)
			calls := f.o.count()
			if got := f.fetch(t); got != newBody {
				t.Fatalf("fetch %q", got)
			}
			if f.o.count() == calls {
				t.Fatal("v1's blocks were served after v2 was seen")
			}
		})
	}
}

func TestRFC7959_2_10ValidatingOneBlockValidatesTheRepresentation(t *testing.T) {
	v := &versions{body: oldBody, tag: "v1", maxAge: func(uint32) int { return 10 }}
	f := newFixture(t, Defaults(), v.serve)
	f.fetch(t)
	calls := f.o.count()
	f.clk.Advance(11 * time.Second)
	v.maxAge = func(uint32) int { return 50 }
	// Block 0 is validated: 2.03 with Max-Age 50.
	if r := f.do(t, get(target, block2(0, 0, blockSZX))); string(r.Payload) != oldBody[:16] || f.o.count() != calls+1 {
		t.Fatalf("block 0 %q after %d calls", r.Payload, f.o.count()-calls)
	}
	f.clk.Advance(20 * time.Second)
	for num := uint32(1); num < 3; num++ {
		r := f.do(t, get(target, block2(num, 0, blockSZX)))
		if f.o.count() != calls+1 {
			t.Fatalf("block %d went upstream: the validation of block 0 makes it fresh", num)
		}
		if age := maxAgeOf(t, r); age != 30 {
			t.Fatalf("block %d Max-Age %d, want the representation's remaining 30", num, age)
		}
	}
}

func TestRFC7959_2_10BlocksWithoutETag(t *testing.T) {
	v := &versions{body: oldBody, maxAge: func(num uint32) int {
		if num == 0 {
			return 10
		}
		return 60
	}}
	f := newFixture(t, Defaults(), v.serve)
	f.fetch(t)
	calls := f.o.count()
	// Blocks without ETag are cached all the same: nothing tells them
	// apart, but nothing came in between either.
	if got := f.fetch(t); got != oldBody || f.o.count() != calls {
		t.Fatalf("second fetch %q with %d calls", got, f.o.count()-calls)
	}
	// A new first block without ETag may begin a new representation:
	// the blocks after it are asked for again.
	v.set(newBody, "")
	f.clk.Advance(11 * time.Second)
	if got := f.fetch(t); got != newBody {
		t.Fatalf("fetch after block 0 expired %q", got)
	}
	if s := f.c.Stats(); s.Superseded != 2 {
		t.Fatalf("superseded %d", s.Superseded)
	}
}

func TestRFC7959_2_10ETagAppearingOrGoingDropsTheOthers(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		calls    int // to the origin for the fetch that follows
	}{
		{"", "v2", 2}, // blocks 0 and 1
		{"v1", "", 3}, // and the untagged block 2, dropped by the new untagged block 0
	} {
		t.Run(fmt.Sprintf("%q to %q", tc.from, tc.to), func(t *testing.T) {
			v := &versions{body: oldBody, tag: tc.from}
			f := newFixture(t, Defaults(), v.serve)
			f.fetch(t)
			v.set(newBody, tc.to)
			// Block 2 alone comes from the origin (its entry is gone).
			k := mustKey(t, get(target, block2(2, 0, blockSZX)))
			f.c.mu.Lock()
			f.c.remove(f.c.entries[k.ID])
			f.c.mu.Unlock()
			f.do(t, get(target, block2(2, 0, blockSZX)))
			calls := f.o.count()
			if got := f.fetch(t); got != newBody || f.o.count() != calls+tc.calls {
				t.Fatalf("fetch %q with %d calls, want %d", got, f.o.count()-calls, tc.calls)
			}
		})
	}
}

// PR3.5 serves the entry of the request without Accept; not for blocks,
// whose siblings would come from another list.
func TestRFC7959_2_4AcceptFallbackNeverMixesRepresentations(t *testing.T) {
	v := &versions{body: oldBody, tag: "v1", maxAge: func(num uint32) int {
		if num == 0 {
			return 10
		}
		return 60
	}}
	f := newFixture(t, Defaults(), v.serve)
	accept := uintOpt(coap.Accept, 0)
	f.fetch(t, accept)
	v.set(newBody, "v2")
	f.clk.Advance(11 * time.Second)
	if got := f.fetch(t); got != newBody { // without Accept: v2 cached
		t.Fatalf("fetch without Accept %q", got)
	}
	// With Accept: its own block 0 is stale, the one without Accept
	// fresh and of the accepted format, its own block 1 fresh but v1.
	if got := f.fetch(t, accept); got != newBody {
		t.Fatalf("fetch with Accept %q", got)
	}
}

func TestRepIsTheKeyWithoutBlock2(t *testing.T) {
	around := []coap.Option{opt(coap.IfNoneMatch, ""), opt(65000, "x")} // options before and after Block2 in the key
	plain := mustKey(t, get(target, around...))
	b0 := mustKey(t, get(target, append(around, block2(0, 0, 2))...))
	b5 := mustKey(t, get(target, append(around, block2(5, 0, 6))...))
	other := mustKey(t, get(target, append(around, block2(1, 0, 2), uintOpt(coap.Accept, 60))...))
	switch {
	case plain.Rep != plain.ID:
		t.Fatal("without Block2, Rep must be the ID")
	case b0.ID == plain.ID || b0.ID == b5.ID:
		t.Fatal("Block2 must stay in the ID")
	case b0.Rep != plain.ID || b5.Rep != plain.ID:
		t.Fatal("every block's Rep must be the ID of the request without Block2")
	case other.Rep == plain.ID:
		t.Fatal("Accept must stay in Rep")
	}
}

// The representations' index lives as long as its entries: evicted,
// invalidated and dropped entries take it with them.
func TestRepIndexIsBoundedByTheEntries(t *testing.T) {
	v := &versions{body: oldBody, tag: "v1"}
	one := entrySize(v.serve(0, &coap.Message{Code: coap.GET}))
	f := newFixture(t, Config{MaxBytes: 4 * (one + 8), MaxEntryBytes: one + 8, DefaultMaxAge: time.Minute}, v.serve)
	check := func(when string) {
		t.Helper()
		f.c.mu.Lock()
		defer f.c.mu.Unlock()
		n := 0
		for id, g := range f.c.reps {
			if g.head == nil {
				t.Fatalf("%s: empty list kept", when)
			}
			for e := g.head; e != nil; e = e.rnext {
				if e.rep != g || e.key.Rep != id || f.c.entries[e.key.ID] != e {
					t.Fatalf("%s: list holds an entry that is not stored there", when)
				}
				n++
			}
		}
		if n != len(f.c.entries) {
			t.Fatalf("%s: lists hold %d entries, the cache %d", when, n, len(f.c.entries))
		}
	}
	for i := range 50 {
		u := fmt.Sprintf("coap://[fd00::1]/r%d", i)
		for num := uint32(0); num < 3; num++ {
			f.do(t, get(u, block2(num, 0, blockSZX)))
		}
		check("after " + u)
	}
	if s := f.c.Stats(); s.Evictions == 0 || len(f.c.reps) > s.Entries {
		t.Fatalf("stats %+v, %d lists", s, len(f.c.reps))
	}
	for i := range 50 {
		f.c.Invalidate(mustKey(t, get(fmt.Sprintf("coap://[fd00::1]/r%d", i))))
	}
	check("after invalidation")
	if len(f.c.reps) != 0 || len(f.c.entries) != 0 {
		t.Fatalf("%d lists, %d entries left", len(f.c.reps), len(f.c.entries))
	}
}

// BenchmarkStoreBlocks stores the 256 blocks of one representation over
// and over, as its fetches do: the representation's list costs each store
// a link, never a walk over the other blocks, which only a new
// representation makes.
func BenchmarkStoreBlocks(b *testing.B) {
	c := New(Defaults())
	const n = 256
	keys := make([]Key, n)
	resps := make([]*coap.Message, n)
	for i := range n {
		keys[i] = mustKey(b, get(target, block2(uint32(i), 0, 2)))
		resps[i] = content(string(bytes.Repeat([]byte{'x'}, 64)), 42, "v1", 60)
		resps[i].Options = resps[i].Options.Insert(coap.Block2, block2(uint32(i), 1, 2).Value)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if !c.Store(keys[i%n], resps[i%n]) {
			b.Fatal("not stored")
		}
		i++
	}
	if s := c.Stats(); s.Superseded != 0 || s.Entries != n {
		b.Fatalf("stats %+v", s)
	}
}
