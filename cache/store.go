package cache

import (
	"bytes"
	"crypto/sha256"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// entry is one stored response. resp and everything it points to are
// never modified once stored: a refresh replaces the message, so a reader
// that took it under the lock may use it after unlocking.
type entry struct {
	key     Key
	resp    *coap.Message
	etag    []byte // the response's ETag, aliasing resp; nil when none
	cf      int64  // Content-Format, -1 when none
	hop     int    // Hop-Limit of the request that obtained it; noHop when none
	expires time.Time
	size    int64

	prev, next   *entry // recency list, most recent after the sentinel
	uprev, unext *entry // entries of the same URI
	rep          *rep   // the entries of the same representation (Key.Rep)
	rprev, rnext *entry // in rep's list
}

// rep is the index RFC 7959 §2.10 needs: the entries whose requests differ
// at most in Block2 (one Key.Rep), each block of a representation being an
// entry of its own, and what the origin last said of the current
// representation. Every stored 2.05 in it is of that representation: a
// response of another one drops the others (learn), so a client never
// reassembles blocks of two. It lives as long as it holds an entry, so
// there are never more of them than entries.
type rep struct {
	head *entry
	// tag is the ETag of the current representation (a copy), nil when
	// the last response had none.
	tag []byte
	// validated is when the last validation of one of tag's blocks (a
	// 2.03) leaves the representation fresh until: validating a single
	// block validates the complete representation (§2.10). Zero without
	// tag or validation.
	validated time.Time
}

// noHop stands for a request without Hop-Limit: larger than any value.
const noHop = 256

// entryOverhead is what the bookkeeping of one entry is accounted as, on
// top of key, options and payload.
const entryOverhead = 128

func entrySize(m *coap.Message) int64 {
	n := int64(3*sha256.Size + entryOverhead + len(m.Payload))
	for _, o := range m.Options {
		n += int64(2 + len(o.Value))
	}
	return n
}

// snapshot is what a lookup hands out of the lock.
type snapshot struct {
	resp    *coap.Message
	etag    []byte
	cf      int64
	hop     int
	expires time.Time
}

func (s *snapshot) fresh(now time.Time) bool { return now.Before(s.expires) }

// The methods below are called with c.mu held.

func (c *Cache) linkFront(e *entry) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

func (c *Cache) unlinkLRU(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache) linkURI(e *entry) {
	if head := c.byURI[e.key.URI]; head != nil {
		e.unext, head.uprev = head, e
	}
	c.byURI[e.key.URI] = e
}

func (c *Cache) unlinkURI(e *entry) {
	if e.uprev != nil {
		e.uprev.unext = e.unext
	} else if e.unext != nil {
		c.byURI[e.key.URI] = e.unext
	} else {
		delete(c.byURI, e.key.URI)
	}
	if e.unext != nil {
		e.unext.uprev = e.uprev
	}
	e.uprev, e.unext = nil, nil
}

// linkRep adds e to its representation's list. A new list takes e's ETag
// as the current one's if e is a 2.05.
func (c *Cache) linkRep(e *entry) {
	g := c.reps[e.key.Rep]
	if g == nil {
		g = &rep{}
		if e.resp.Code == coap.Content {
			g.tag = bytes.Clone(e.etag)
		}
		c.reps[e.key.Rep] = g
	}
	if g.head != nil {
		e.rnext, g.head.rprev = g.head, e
	}
	g.head, e.rep = e, g
}

func (c *Cache) unlinkRep(e *entry) {
	g := e.rep
	if e.rprev != nil {
		e.rprev.rnext = e.rnext
	} else {
		g.head = e.rnext
	}
	if e.rnext != nil {
		e.rnext.rprev = e.rprev
	}
	if g.head == nil {
		delete(c.reps, e.key.Rep)
	}
	e.rprev, e.rnext, e.rep = nil, nil, nil
}

func (c *Cache) remove(e *entry) {
	c.unlinkLRU(e)
	c.unlinkURI(e)
	c.unlinkRep(e)
	delete(c.entries, e.key.ID)
	c.bytes -= e.size
}

// expiry is when an entry stops being fresh: at the end of its own
// Max-Age, or later if another block of its representation was validated
// since (RFC 7959 §2.10). A 2.05 of another block does not extend it: the
// first block then expires by its own Max-Age and is asked for again,
// which is how a new representation is found before the old one's last
// block expires.
func (e *entry) expiry() time.Time {
	if g := e.rep; e.etag != nil && g.validated.After(e.expires) && e.resp.Code == coap.Content && bytes.Equal(e.etag, g.tag) {
		return g.validated
	}
	return e.expires
}

// learn applies what a 2.05 of the resource rep names (or a 2.03, whose tag
// is the current one) says of its current representation, stored or not:
// every stored 2.05 of another representation is dropped, so that no
// client reassembles one from blocks of two (RFC 7959 §2.4, §2.10). A
// representation is another when the ETags differ, or one of the two has
// none; and a first block (or a whole response) without an ETag may begin
// a new one that nothing can tell apart, so it drops every other 2.05 too.
// keep, when not nil, is the entry of the response itself. validated, when
// not zero, is the freshness a 2.03 gives the whole representation
// (§2.10).
func (c *Cache) learn(id [sha256.Size]byte, keep *entry, tag []byte, first bool, validated time.Time) {
	g := c.reps[id]
	if g == nil {
		return
	}
	var other bool
	switch {
	case tag != nil:
		other = g.tag == nil || !bytes.Equal(g.tag, tag)
	case g.tag != nil:
		other = true
	default:
		other = first
	}
	if other {
		for e := g.head; e != nil; {
			next := e.rnext
			if e != keep && e.resp.Code == coap.Content {
				c.remove(e)
				c.stats.superseded.Add(1)
			}
			e = next
		}
		// The last entry may have gone, and g with it: nothing to keep.
		g.tag, g.validated = bytes.Clone(tag), time.Time{}
	}
	if tag != nil && !validated.IsZero() {
		g.validated = validated // the latest word of the origin, shorter or not
	}
}

// learnFrom is learn for a 2.05 that is not stored.
func (c *Cache) learnFrom(id [sha256.Size]byte, resp *coap.Message) {
	if resp.Code != coap.Content {
		return
	}
	tag, _ := resp.Options.Get(coap.ETag)
	c.learn(id, nil, tag, firstBlock(resp), time.Time{})
}

// firstBlock reports a response that is the first block of its
// representation, or all of it (no Block2). An unreadable Block2 counts as
// a first block: it drops more, never less.
func firstBlock(m *coap.Message) bool {
	v, ok := m.Options.Get(coap.Block2)
	return !ok || len(v) > 3 || coap.DecodeUint(v)>>4 == 0
}

// get finds an entry and marks it recently used. An expired entry without
// an ETag is of no further use and is dropped here; one with an ETag stays
// for validation (§5.6.2).
func (c *Cache) get(id [sha256.Size]byte, now time.Time) (snapshot, bool) {
	e := c.entries[id]
	if e == nil {
		return snapshot{}, false
	}
	expires := e.expiry()
	if !now.Before(expires) && e.etag == nil {
		c.remove(e)
		c.stats.expired.Add(1)
		return snapshot{}, false
	}
	c.unlinkLRU(e)
	c.linkFront(e)
	return snapshot{resp: e.resp, etag: e.etag, cf: e.cf, hop: e.hop, expires: expires}, true
}

// put stores resp (which the cache owns from here on) under key, replacing
// any entry there (PR3.2), drops the 2.05s of other representations of
// the resource (learn), and evicts least recently used entries beyond
// MaxBytes. A response over MaxEntryBytes is not stored, and the entry it
// supersedes is dropped. A key without Rep is a representation of its own.
func (c *Cache) put(key Key, resp *coap.Message, maxAge time.Duration, hop int, now time.Time) bool {
	if key.Rep == ([sha256.Size]byte{}) {
		key.Rep = key.ID
	}
	if old := c.entries[key.ID]; old != nil {
		c.remove(old)
	}
	size := entrySize(resp)
	if size > c.cfg.MaxEntryBytes {
		c.learnFrom(key.Rep, resp)
		return false
	}
	e := &entry{key: key, resp: resp, cf: -1, hop: hop, expires: now.Add(maxAge), size: size}
	if v, ok := resp.Options.Get(coap.ETag); ok {
		e.etag = v
	}
	if v, ok := resp.Options.Get(coap.ContentFormat); ok && len(v) <= 2 {
		e.cf = int64(coap.DecodeUint(v))
	}
	c.entries[key.ID] = e
	c.linkFront(e)
	c.linkURI(e)
	c.linkRep(e)
	if resp.Code == coap.Content {
		c.learn(key.Rep, e, e.etag, firstBlock(resp), time.Time{})
	}
	c.bytes += size
	for c.bytes > c.cfg.MaxBytes && c.lru.prev != &c.lru {
		victim := c.lru.prev
		c.remove(victim)
		c.stats.evictions.Add(1)
	}
	c.stats.stored.Add(1)
	return true
}

// refresh applies a 2.03 whose ETag is tag to the entry it validates
// (§5.9.1.3): new freshness from its Max-Age, for the other blocks of the
// representation too (RFC 7959 §2.10), and every safe-to-forward option
// type it carries replaces that type in the stored response. The stored
// message is replaced, not modified.
func (c *Cache) refresh(id [sha256.Size]byte, tag []byte, valid *coap.Message, now time.Time) (snapshot, bool) {
	e := c.entries[id]
	if e == nil || e.etag == nil || !bytes.Equal(e.etag, tag) {
		return snapshot{}, false
	}
	maxAge, ok := c.maxAge(valid)
	if !ok {
		maxAge = 0 // Max-Age 0 or unreadable: validated, but stale at once
	}
	old := e.resp
	m := &coap.Message{Code: old.Code, Payload: old.Payload}
	m.Options = make(coap.Options, 0, len(old.Options)+len(valid.Options))
	for _, o := range old.Options {
		if o.ID == coap.MaxAge || !o.ID.Unsafe() && valid.Options.Has(o.ID) {
			continue
		}
		m.Options = append(m.Options, o)
	}
	for _, o := range valid.Options {
		if !o.ID.Unsafe() {
			m.Options = m.Options.Insert(o.ID, o.Value)
		}
	}
	if v, ok := valid.Options.Get(coap.MaxAge); ok {
		m.Options = m.Options.Insert(coap.MaxAge, v)
	}
	m = m.Clone() // one allocation, sharing nothing with the 2.03
	key, hop := e.key, e.hop
	if !c.put(key, m, maxAge, hop, now) {
		return snapshot{}, false
	}
	c.learn(key.Rep, nil, tag, false, now.Add(maxAge))
	return c.get(id, now)
}

// invalidate drops every entry of a URI, all methods and variants.
func (c *Cache) invalidate(uri [sha256.Size]byte) {
	for e := c.byURI[uri]; e != nil; {
		next := e.unext
		c.remove(e)
		c.stats.invalidated.Add(1)
		e = next
	}
}
