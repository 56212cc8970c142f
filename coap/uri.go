package coap

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ErrBadURI is returned for a URI that RFC 7252 §6.4 cannot decompose.
var ErrBadURI = errors.New("coap: bad URI")

// URI is a request URI taken apart as RFC 7252 §6.4 does: scheme, host,
// port, and percent-decoded path segments and query arguments.
type URI struct {
	Scheme string   // lower case: "coap", "coaps", "http", ...
	Host   string   // reg-name (lower case) or IP literal without brackets
	Port   uint16   // the explicit port, else the scheme's default, else 0
	Path   []string // Uri-Path values; nil for "" and "/"
	Query  []string // Uri-Query values
}

// DefaultPort returns the default port of a scheme, 0 when unknown.
func DefaultPort(scheme string) uint16 {
	switch scheme {
	case "coap", "coap+tcp":
		return 5683
	case "coaps", "coaps+tcp":
		return 5684
	case "http", "coap+ws":
		return 80
	case "https", "coaps+ws":
		return 443
	}
	return 0
}

// ParseURI decomposes an absolute URI (a Proxy-Uri value) per RFC 7252
// §6.4. Any scheme is accepted here: whether the proxy can reach it is the
// caller's decision (§5.7.2: 5.05 for a scheme it does not serve). Port is
// 0 when the URI names none and the scheme has no default that DefaultPort
// knows; such a URI is still valid.
func ParseURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURI, err)
	}
	// §6.4 steps 1 and 4: absolute, no fragment.
	if !u.IsAbs() || u.Opaque != "" {
		return nil, fmt.Errorf("%w: %q is not an absolute URI", ErrBadURI, s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, fmt.Errorf("%w: %q has a fragment", ErrBadURI, s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %q has user info", ErrBadURI, s)
	}
	r := &URI{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname()}
	if r.Host == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrBadURI, s)
	}
	if strings.Contains(r.Host, ":") && !strings.HasPrefix(u.Host, "[") {
		// RFC 3986 §3.2.2: an IPv6 literal is bracketed.
		return nil, fmt.Errorf("%w: %q: bad host", ErrBadURI, s)
	}
	if !strings.HasPrefix(u.Host, "[") {
		for i := 0; i < len(r.Host); i++ {
			// RFC 3986 §3.2.2 reg-name: ASCII other than unreserved and
			// sub-delims is not a host character.
			if c := r.Host[i]; c < 0x80 && !isAlnum(c) && strings.IndexByte(hostChars, c) < 0 {
				return nil, fmt.Errorf("%w: %q: bad host", ErrBadURI, s)
			}
		}
	}
	if a, err := netip.ParseAddr(r.Host); err == nil {
		r.Host = a.String()
	} else {
		r.Host = strings.ToLower(r.Host)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: port %q", ErrBadURI, p)
		}
		r.Port = uint16(n)
	} else {
		r.Port = DefaultPort(r.Scheme)
	}
	// §6.4 step 8: path segments, percent-decoded.
	if p := u.EscapedPath(); p != "" && p != "/" {
		for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			v, err := url.PathUnescape(seg)
			if err != nil {
				return nil, fmt.Errorf("%w: path segment %q", ErrBadURI, seg)
			}
			r.Path = append(r.Path, v)
		}
	}
	// §6.4 step 9: query arguments split at "&", percent-decoded ("+"
	// stays "+": CoAP has no form encoding).
	if u.ForceQuery || u.RawQuery != "" {
		for _, arg := range strings.Split(u.RawQuery, "&") {
			v, err := url.PathUnescape(arg)
			if err != nil {
				return nil, fmt.Errorf("%w: query argument %q", ErrBadURI, arg)
			}
			r.Query = append(r.Query, v)
		}
	}
	return r, nil
}

// HostIsIP reports whether the host is an IP literal.
func (u *URI) HostIsIP() bool {
	_, err := netip.ParseAddr(u.Host)
	return err == nil
}

// SetOptions replaces the Uri-* options of opts with u's (§6.4 steps 5–9).
// Uri-Host is included when the host is not an IP literal; Uri-Port when
// the port differs from dstPort, the UDP port the request is sent to.
func (u *URI) SetOptions(opts Options, dstPort uint16) Options {
	opts = opts.Remove(URIHost).Remove(URIPort).Remove(URIPath).Remove(URIQuery)
	if !u.HostIsIP() {
		opts = opts.Insert(URIHost, []byte(u.Host))
	}
	if u.Port != dstPort {
		opts = opts.Insert(URIPort, EncodeUint(uint32(u.Port)))
	}
	for _, p := range u.Path {
		opts = opts.Insert(URIPath, []byte(p))
	}
	for _, q := range u.Query {
		opts = opts.Insert(URIQuery, []byte(q))
	}
	return opts
}

// URIFromOptions composes the effective request URI of §6.5 from a
// request's Uri-* options, for a request that arrived with the given
// scheme at host:port (or that names it in Proxy-Scheme).
func URIFromOptions(opts Options, scheme, host string, port uint16) *URI {
	u := &URI{Scheme: scheme, Host: host, Port: port}
	if h, ok := opts.Get(URIHost); ok {
		u.Host = string(h)
		if a, err := netip.ParseAddr(u.Host); err == nil {
			u.Host = a.String()
		} else {
			u.Host = strings.ToLower(strings.Trim(u.Host, "[]"))
		}
	}
	if p, ok := opts.Uint(URIPort); ok {
		u.Port = uint16(p)
	}
	for v := range opts.All(URIPath) {
		u.Path = append(u.Path, string(v))
	}
	for v := range opts.All(URIQuery) {
		u.Query = append(u.Query, string(v))
	}
	return u
}

// String composes the URI with percent-encoding (§6.5).
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	if a, err := netip.ParseAddr(u.Host); err == nil && a.Is6() {
		// RFC 6874: a zone's "%" is written "%25" in a URI.
		b.WriteString("[" + strings.Replace(u.Host, "%", "%25", 1) + "]")
	} else {
		b.WriteString(escapeSet(u.Host, hostChars))
	}
	if d := DefaultPort(u.Scheme); u.Port != d {
		b.WriteString(":" + strconv.Itoa(int(u.Port)))
	}
	if len(u.Path) == 0 {
		b.WriteString("/")
	}
	for _, p := range u.Path {
		b.WriteString("/")
		b.WriteString(escapeSet(p, pathChars))
	}
	for i, q := range u.Query {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString(escapeSet(q, queryChars))
	}
	return b.String()
}

// Characters left as they are (RFC 3986 unreserved and sub-delims, plus
// ":" and "@" in a path segment, and "/" and "?" in a query argument; "&"
// is escaped in a query argument because it separates them, §6.5).
const (
	hostChars  = "-._~!$&'()*+,;="
	pathChars  = "-._~!$&'()*+,;=:@"
	queryChars = "-._~!$'()*+,;=:@/?"
)

// escapeSet percent-encodes every byte of s that is neither alphanumeric
// nor in keep.
func escapeSet(s, keep string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c), strings.IndexByte(keep, c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
