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
}

// noHop stands for a request without Hop-Limit: larger than any value.
const noHop = 256

// entryOverhead is what the bookkeeping of one entry is accounted as, on
// top of key, options and payload.
const entryOverhead = 128

func entrySize(m *coap.Message) int64 {
	n := int64(2*sha256.Size + entryOverhead + len(m.Payload))
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

func (c *Cache) remove(e *entry) {
	c.unlinkLRU(e)
	c.unlinkURI(e)
	delete(c.entries, e.key.ID)
	c.bytes -= e.size
}

// get finds an entry and marks it recently used. An expired entry without
// an ETag is of no further use and is dropped here; one with an ETag stays
// for validation (§5.6.2).
func (c *Cache) get(id [sha256.Size]byte, now time.Time) (snapshot, bool) {
	e := c.entries[id]
	if e == nil {
		return snapshot{}, false
	}
	if !now.Before(e.expires) && e.etag == nil {
		c.remove(e)
		c.stats.expired.Add(1)
		return snapshot{}, false
	}
	c.unlinkLRU(e)
	c.linkFront(e)
	return snapshot{resp: e.resp, etag: e.etag, cf: e.cf, hop: e.hop, expires: e.expires}, true
}

// put stores resp (which the cache owns from here on) under key, replacing
// any entry there (PR3.2), and evicts least recently used entries beyond
// MaxBytes. A response over MaxEntryBytes is not stored, and the entry it
// supersedes is dropped.
func (c *Cache) put(key Key, resp *coap.Message, maxAge time.Duration, hop int, now time.Time) bool {
	if old := c.entries[key.ID]; old != nil {
		c.remove(old)
	}
	size := entrySize(resp)
	if size > c.cfg.MaxEntryBytes {
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
// (§5.9.1.3): new freshness from its Max-Age, and every safe-to-forward
// option type it carries replaces that type in the stored response. The
// stored message is replaced, not modified.
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
