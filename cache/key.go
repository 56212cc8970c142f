package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"strings"
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// Key names one stored response. It holds three SHA-256 digests of the
// canonical encoding described in README.md: ID over the whole request key
// (method, effective request URI, client transport security, every option
// that is a cache key, payload), URI over the effective request URI alone,
// which is what a successful unsafe request invalidates, and Rep over the
// request key without its Block2 option: the blocks of one representation
// share it (RFC 7959 §2.10), and it is the ID of the same request without
// Block2.
//
// A collision-resistant digest rather than a fast one: a client that could
// craft a request colliding with another client's key could poison what
// that client is served, across coap and coaps too (§11.2); and a digest is
// 32 bytes however large a FETCH payload is.
type Key struct {
	ID  [sha256.Size]byte
	URI [sha256.Size]byte
	Rep [sha256.Size]byte
}

// keyVersion starts every encoding, so that a change of format cannot
// alias an old one.
const keyVersion = 1

// Field tags of the canonical encoding. Every variable field is a tag, a
// 4-byte big-endian length and the bytes, so the encoding is unambiguous.
const (
	tagAbsolute = 'F' // Proxy-Uri or Proxy-Scheme: the URI names its own origin
	tagLocal    = 'R' // neither: the request's own Uri-* options (reverse route)
	tagScheme   = 's'
	tagHostV4   = '4'
	tagHostV6   = '6'
	tagHostName = 'n'
	tagPort     = 'p'
	tagPath     = '/'
	tagQuery    = '?'
	tagURIEnd   = '.'
	tagOption   = 'o'
	tagPayload  = 'b'
	tagAccept   = 'a'
)

// maxPooledKey is the largest key buffer returned to the pool; a bigger one
// (a large FETCH body) is left to the garbage collector.
const maxPooledKey = 4096

var keyPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// reqKey is the canonical encoding of one request, in a pooled buffer.
type reqKey struct {
	buf         *[]byte
	b           []byte
	uriEnd      int // b[:uriEnd] is the effective request URI
	acceptStart int // b[:acceptStart] is the key without Accept (PR3.5)
	accepts     int // number of Accept options
	protected   bool
}

// encodeKey builds the canonical key of r into a pooled buffer. ok is false
// for a request this cache does not store responses for: not GET or FETCH,
// OSCORE without Request-Hash (RFC 8613 §10), a protected request with an
// outer ETag, or a target it cannot normalize with certainty. On success
// the caller must call release.
func encodeKey(r *coap.Request) (k reqKey, ok bool) {
	m := r.Msg
	if m == nil || !m.Code.IsSafe() {
		return k, false
	}
	k.protected = m.Options.Has(coap.OSCORE)
	if k.protected && (!m.Options.Has(coap.RequestHash) || m.Options.Has(coap.ETag)) {
		// Ordinary OSCORE is never cached. A deterministic request is,
		// by its outer options; an outer ETag on one would be validation
		// the proxy may not take part in, so it passes too.
		return k, false
	}
	if k, ok = encodeURI(m); !ok {
		return k, false
	}
	b := k.b
	var sec byte
	if r.Secure {
		sec = 1
	}
	b = append(b, sec, byte(m.Code))
	for _, o := range m.Options {
		if !inKey(o.ID) {
			continue
		}
		b = append(b, tagOption, byte(o.ID>>8), byte(o.ID))
		b = appendField(b, o.Value)
	}
	// RFC 8132 §2: the FETCH payload is part of the key. A GET payload
	// has no defined meaning; keying on it too is never wrong.
	b = append(b, tagPayload)
	b = appendField(b, m.Payload)
	k.acceptStart = len(b)
	for v := range m.Options.All(coap.Accept) {
		b = append(b, tagAccept)
		b = appendField(b, v)
		k.accepts++
	}
	k.b = b
	return k, true
}

// encodeURI writes only the effective request URI part of the key, for any
// method. On success the caller must call release.
func encodeURI(m *coap.Message) (k reqKey, ok bool) {
	k.buf = keyPool.Get().(*[]byte)
	b := append((*k.buf)[:0], keyVersion)
	b, ok = appendURI(b, m.Options)
	k.b = b
	if !ok {
		k.release()
		return reqKey{}, false
	}
	k.b = append(k.b, tagURIEnd)
	k.uriEnd = len(k.b)
	k.acceptStart = len(k.b)
	return k, true
}

// release returns the buffer to the pool.
// onHeap is a copy of k that an answer's continuation may keep. Only a
// miss takes it, so a hit's key stays on the stack. The copy shares k's
// pooled buffer: whichever of the two the request ends with releases it,
// once (serveSafe's rule).
func (k *reqKey) onHeap() *reqKey {
	h := *k
	return &h
}

func (k *reqKey) release() {
	if k.buf == nil {
		return
	}
	if cap(k.b) <= maxPooledKey {
		*k.buf = k.b[:0]
		keyPool.Put(k.buf)
	}
	k.buf, k.b = nil, nil
}

func (k *reqKey) id() [sha256.Size]byte  { return sha256.Sum256(k.b) }
func (k *reqKey) uri() [sha256.Size]byte { return sha256.Sum256(k.b[:k.uriEnd]) }

// withoutAccept is the ID the same request without its Accept option has.
func (k *reqKey) withoutAccept() [sha256.Size]byte { return sha256.Sum256(k.b[:k.acceptStart]) }

// rep is Key.Rep: the digest of the key without its Block2 option, which
// is the ID the same request without Block2 has (RFC 7959 §2.10: the
// blocks of one representation share it). Only what is stored needs it,
// so the hit path does not pay for it: the Block2 field is found here, in
// the option part that follows the URI, the security byte and the method.
func (k *reqKey) rep() [sha256.Size]byte {
	b := k.b
	var h hash.Hash
	from := 0 // b[from:] is not written yet
	for i := k.uriEnd + 2; i+7 <= len(b) && b[i] == tagOption; {
		id := coap.OptionID(binary.BigEndian.Uint16(b[i+1:]))
		next := i + 7 + int(binary.BigEndian.Uint32(b[i+3:]))
		if id == coap.Block2 {
			if h == nil {
				h = sha256.New()
			}
			h.Write(b[from:i])
			from = next
		}
		i = next
	}
	if h == nil {
		return k.id()
	}
	h.Write(b[from:])
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

func (k *reqKey) key() Key { return Key{ID: k.id(), URI: k.uri(), Rep: k.rep()} }

// inKey reports whether an option goes into the option part of the key.
func inKey(id coap.OptionID) bool {
	switch id {
	case coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.ProxyURI, coap.ProxyScheme:
		// Normalized into the URI part (§6.4, §6.5).
		return false
	case coap.ETag:
		// A request ETag asks for validation (§5.6.2, PR3.3); it
		// selects nothing.
		return false
	case coap.Observe:
		// RFC 7641 §2: Observe is not part of the cache key.
		return false
	case coap.HopLimit:
		// RFC 8768 §3 makes Hop-Limit a cache key, but a proxy that
		// understands it follows §5.6 for everything except a stored
		// 5.08, which it may use only for a Hop-Limit no larger than
		// the one that obtained it: the entry keeps that value instead.
		return false
	case coap.Accept:
		// Appended last, so that the key without it is a prefix (PR3.5).
		return false
	}
	// §5.4.6: every other option is a cache key unless it is NoCacheKey.
	// Unknown and unsafe ones included: a request we cannot interpret
	// can still be told apart from another.
	return !id.NoCacheKey()
}

func appendField(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// appendURI writes the effective request URI (§6.4, §6.5) or, without
// Proxy-Uri and Proxy-Scheme, the request's own Uri-* options.
func appendURI(b []byte, opts coap.Options) ([]byte, bool) {
	pu, hasPU := opts.Get(coap.ProxyURI)
	ps, hasPS := opts.Get(coap.ProxyScheme)
	if hasPU {
		if hasPS || count(opts, coap.ProxyURI) > 1 || hasURIOptions(opts) {
			// §5.10.2: Proxy-Uri excludes Uri-* options; the router
			// would ignore them, a next-hop proxy might not. Not
			// guessed at: not cached.
			return b, false
		}
		b = append(b, tagAbsolute)
		return appendProxyURI(b, pu)
	}
	if hasPS {
		if count(opts, coap.ProxyScheme) > 1 || count(opts, coap.URIHost) != 1 || count(opts, coap.URIPort) > 1 {
			return b, false
		}
		b = append(b, tagAbsolute, tagScheme)
		at := len(b)
		b = appendField(b, ps)
		lower(b[at+4:])
		port := defaultPort(b[at+4:])
		host, _ := opts.Get(coap.URIHost)
		var ok bool
		if b, ok = appendHostOption(b, host); !ok {
			return b, false
		}
		if p, ok := opts.Uint(coap.URIPort); ok {
			// The same truncation as coap.URIFromOptions, so that the
			// key names the port the router sends to.
			port = uint16(p)
		}
		b = append(b, tagPort, byte(port>>8), byte(port))
		return appendPathQuery(b, opts), true
	}
	if count(opts, coap.URIHost) > 1 || count(opts, coap.URIPort) > 1 {
		return b, false
	}
	b = append(b, tagLocal)
	if host, ok := opts.Get(coap.URIHost); ok {
		if b, ok = appendHostOption(b, host); !ok {
			return b, false
		}
	}
	if p, ok := opts.Get(coap.URIPort); ok {
		b = append(b, tagPort)
		b = appendField(b, p)
	}
	return appendPathQuery(b, opts), true
}

func count(opts coap.Options, id coap.OptionID) int {
	n := 0
	for range opts.All(id) {
		n++
	}
	return n
}

func hasURIOptions(opts coap.Options) bool {
	return opts.Has(coap.URIHost) || opts.Has(coap.URIPort) || opts.Has(coap.URIPath) || opts.Has(coap.URIQuery)
}

func appendPathQuery(b []byte, opts coap.Options) []byte {
	for v := range opts.All(coap.URIPath) {
		b = append(b, tagPath)
		b = appendField(b, v)
	}
	for v := range opts.All(coap.URIQuery) {
		b = append(b, tagQuery)
		b = appendField(b, v)
	}
	return b
}

// appendHostOption writes a Uri-Host value: an IP literal (brackets
// allowed) in binary, a reg-name case-folded. A value that is neither
// with certainty (a zone, a colon) is refused.
func appendHostOption(b, h []byte) ([]byte, bool) {
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
		if a, is4, ok := parseIP(h); ok {
			return appendIP(b, a, is4), true
		}
		return b, false
	}
	if a, is4, ok := parseIP(h); ok {
		return appendIP(b, a, is4), true
	}
	if len(h) == 0 || bytes.ContainsAny(h, ":[]%") || !ascii(h) {
		return b, false
	}
	b = append(b, tagHostName)
	at := len(b)
	b = appendField(b, h)
	lower(b[at+4:])
	return b, true
}

func appendIP(b []byte, a [16]byte, is4 bool) []byte {
	if is4 {
		return append(append(b, tagHostV4), a[12:]...)
	}
	return append(append(b, tagHostV6), a[:]...)
}

// appendProxyURI decomposes a Proxy-Uri as §6.4 does, the way
// coap.ParseURI reads it, without allocating: scheme and reg-name
// case-folded, IP literals in binary, the port explicit, path segments and
// query arguments percent-decoded. Anything it is not sure to read the way
// the router does (user info, fragments, zones, bad escapes) is refused:
// the request is forwarded but not cached.
func appendProxyURI(b, s []byte) ([]byte, bool) {
	// scheme ":" "//"
	i := 0
	for i < len(s) && s[i] != ':' {
		c := s[i]
		if !(isAlpha(c) || i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.')) {
			return b, false
		}
		i++
	}
	if i == 0 || len(s) < i+3 || s[i+1] != '/' || s[i+2] != '/' {
		return b, false
	}
	if bytes.IndexByte(s, '#') >= 0 {
		return b, false
	}
	b = append(b, tagScheme)
	at := len(b)
	b = appendField(b, s[:i])
	lower(b[at+4:])
	port := defaultPort(b[at+4:])
	s = s[i+3:]
	// authority, up to the path or the query
	end := 0
	for end < len(s) && s[end] != '/' && s[end] != '?' {
		end++
	}
	auth, rest := s[:end], s[end:]
	if bytes.IndexByte(auth, '@') >= 0 || bytes.IndexByte(auth, '%') >= 0 {
		return b, false
	}
	var host, portText []byte
	if len(auth) > 0 && auth[0] == '[' {
		j := bytes.IndexByte(auth, ']')
		if j < 0 {
			return b, false
		}
		host = auth[1:j]
		switch after := auth[j+1:]; {
		case len(after) == 0:
		case after[0] == ':':
			portText = after[1:]
		default:
			return b, false
		}
		a, is4, ok := parseIP(host)
		if !ok {
			return b, false
		}
		b = appendIP(b, a, is4)
	} else {
		host = auth
		if j := bytes.IndexByte(auth, ':'); j >= 0 {
			host, portText = auth[:j], auth[j+1:]
		}
		if len(host) == 0 || bytes.ContainsAny(host, ":[]") || !ascii(host) {
			return b, false
		}
		if a, is4, ok := parseIP(host); ok {
			b = appendIP(b, a, is4)
		} else {
			b = append(b, tagHostName)
			at := len(b)
			b = appendField(b, host)
			lower(b[at+4:])
		}
	}
	if len(portText) > 0 {
		v := 0
		for _, c := range portText {
			if !isDigit(c) {
				return b, false
			}
			if v = v*10 + int(c-'0'); v > 0xffff {
				return b, false
			}
		}
		port = uint16(v)
	} else if port == 0 {
		return b, false // coap.ParseURI: no default port for the scheme
	}
	b = append(b, tagPort, byte(port>>8), byte(port))
	path, query, hasQuery := rest, []byte(nil), false
	if j := bytes.IndexByte(rest, '?'); j >= 0 {
		path, query, hasQuery = rest[:j], rest[j+1:], true
	}
	for _, c := range path {
		if !isPathChar(c) {
			// net/url re-escapes such a path before the router splits
			// it, so "%2F" would then separate segments: not guessed at.
			return b, false
		}
	}
	// §6.4 step 8: "" and "/" have no segments.
	if len(path) > 1 {
		path = path[1:]
		for {
			seg := path
			j := bytes.IndexByte(path, '/')
			if j >= 0 {
				seg = path[:j]
			}
			var ok bool
			if b, ok = appendUnescaped(b, tagPath, seg); !ok {
				return b, false
			}
			if j < 0 {
				break
			}
			path = path[j+1:]
		}
	}
	// §6.4 step 9: arguments split at "&"; "?" alone is one empty one.
	if hasQuery {
		for {
			arg := query
			j := bytes.IndexByte(query, '&')
			if j >= 0 {
				arg = query[:j]
			}
			var ok bool
			if b, ok = appendUnescaped(b, tagQuery, arg); !ok {
				return b, false
			}
			if j < 0 {
				break
			}
			query = query[j+1:]
		}
	}
	return b, true
}

// appendUnescaped writes a tagged, percent-decoded field; "+" stays "+".
func appendUnescaped(b []byte, tag byte, s []byte) ([]byte, bool) {
	b = append(b, tag, 0, 0, 0, 0)
	at := len(b)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return b, false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		b = append(b, c)
	}
	binary.BigEndian.PutUint32(b[at-4:], uint32(len(b)-at))
	return b, true
}

// defaultPort is coap.DefaultPort on a case-folded scheme. The scheme is
// copied to the stack, not the heap: the string does not escape.
func defaultPort(scheme []byte) uint16 { return coap.DefaultPort(string(scheme)) }

// isPathChar reports the characters of an RFC 3986 path: pchar, "/" and
// the "%" of an escape.
func isPathChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("-._~!$&'()*+,;=:@/%", c) >= 0
}

// ascii reports a host the router case-folds as this cache does: beyond
// ASCII strings.ToLower maps runes (and invalid bytes) in ways not worth
// copying, so such hosts are not cached.
func ascii(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isHex(c byte) bool   { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// parseIP reads an IPv4 or IPv6 literal exactly as net/netip does (the
// router canonicalizes hosts with it), without allocating; zones are
// refused. The IPv4 address is returned in the last four bytes.
func parseIP(s []byte) (a [16]byte, is4, ok bool) {
	if bytes.IndexByte(s, ':') < 0 {
		v4, ok := parseIPv4(s)
		copy(a[12:], v4[:])
		return a, true, ok
	}
	a, ok = parseIPv6(s)
	return a, false, ok
}

func parseIPv4(s []byte) (ip [4]byte, ok bool) {
	field, val, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			if digits == 1 && val == 0 {
				return ip, false // a leading zero
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return ip, false
			}
		case c == '.':
			if digits == 0 || field == 3 {
				return ip, false
			}
			ip[field] = byte(val)
			field++
			val, digits = 0, 0
		default:
			return ip, false
		}
	}
	if field != 3 || digits == 0 {
		return ip, false
	}
	ip[3] = byte(val)
	return ip, true
}

func parseIPv6(s []byte) (ip [16]byte, ok bool) {
	ellipsis := -1 // index in ip where "::" stands
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
		if len(s) == 0 {
			return ip, true
		}
	}
	i := 0
	for i < 16 {
		off, acc := 0, uint32(0)
		for off < len(s) {
			c := s[off]
			if !isHex(c) {
				break
			}
			acc = acc<<4 | uint32(unhex(c))
			off++
			if off > 4 {
				return ip, false
			}
		}
		if off == 0 {
			return ip, false
		}
		if off < len(s) && s[off] == '.' {
			// An embedded IPv4 address ends the literal.
			if ellipsis < 0 && i != 12 || i+4 > 16 {
				return ip, false
			}
			v4, ok := parseIPv4(s)
			if !ok {
				return ip, false
			}
			copy(ip[i:], v4[:])
			i += 4
			s = nil
			break
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		s = s[off:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return ip, false
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return ip, false
			}
			ellipsis = i
			s = s[1:]
			if len(s) == 0 {
				break
			}
		}
	}
	if len(s) != 0 {
		return ip, false
	}
	if i < 16 {
		if ellipsis < 0 {
			return ip, false
		}
		n := 16 - i
		for j := i - 1; j >= ellipsis; j-- {
			ip[j+n] = ip[j]
		}
		for j := ellipsis + n - 1; j >= ellipsis; j-- {
			ip[j] = 0
		}
	} else if ellipsis >= 0 {
		return ip, false // "::" must stand for at least one group
	}
	return ip, true
}
