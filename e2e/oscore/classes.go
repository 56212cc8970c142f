package oscore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
)

// class returns the §4.1 protection class of an option: 'E' (inner), 'U'
// (outer) or 'B' (both). Options unknown to gatewayd are class E (§4.1).
func class(id coap.OptionID) byte {
	d, ok := id.Def()
	if !ok {
		return 'E'
	}
	switch d.OSCORE {
	case 'U', 'B':
		return d.OSCORE
	}
	return 'E'
}

// split divides the options of an unprotected message into the inner ones,
// which go into the plaintext (§4.1.1, §5.3), and the outer ones, which stay
// on the OSCORE message (§4.1.2). Class B options are inner; Observe is the
// exception that is also outer (§4.1.3.5), with an empty inner value in
// notifications (§4.1.3.5.2). A Proxy-Uri is decomposed (§4.1.3.3).
// Neither result aliases the other's backing array or m.Options.
func split(m *coap.Message, notification bool) (inner, outer coap.Options, err error) {
	for _, o := range m.Options {
		switch {
		case o.ID == coap.OSCORE:
			return nil, nil, ErrNested // §4.1.3.7
		case o.ID == coap.ProxyURI:
			if inner, outer, err = splitProxyURI(m, o.Value, inner, outer); err != nil {
				return nil, nil, err
			}
		case o.ID == coap.Observe:
			outer = outer.Insert(o.ID, o.Value)
			if notification {
				inner = inner.Insert(o.ID, nil)
			} else {
				inner = inner.Insert(o.ID, o.Value) // §4.1.3.5.1
			}
		case class(o.ID) == 'U':
			outer = outer.Insert(o.ID, o.Value)
		default:
			// Class E, and class B options other than Observe: the
			// sender's own Max-Age, Block and Size options are end to end
			// (§4.1.3.1, §4.1.3.4.1); outer ones belong to proxies.
			inner = inner.Insert(o.ID, o.Value)
		}
	}
	return inner, outer, nil
}

// defaultPorts are the ports a composed URI leaves out (RFC 7252 §6.5 step
// 5, RFC 8323 §8, RFC 9110 §4.2).
var defaultPorts = map[string]string{
	"coap": "5683", "coaps": "5684",
	"coap+tcp": "5683", "coaps+tcp": "5684",
	"coap+ws": "80", "coaps+ws": "443",
	"http": "80", "https": "443",
}

// splitProxyURI applies §4.1.3.3: the Proxy-Uri is decomposed as in RFC 7252
// §6.4; Uri-Path and Uri-Query become inner options and the outer Proxy-Uri
// is recomposed from scheme, host and port alone.
func splitProxyURI(m *coap.Message, uri []byte, inner, outer coap.Options) (coap.Options, coap.Options, error) {
	for _, id := range []coap.OptionID{coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.ProxyScheme} {
		if m.Options.Has(id) {
			// RFC 7252 §5.10.2: Proxy-Uri excludes the Uri-* options.
			return nil, nil, fmt.Errorf("%w: Proxy-Uri together with %v", ErrMessage, id)
		}
	}
	base, paths, queries, err := decomposeURI(string(uri))
	if err != nil {
		return nil, nil, err
	}
	outer = outer.Insert(coap.ProxyURI, []byte(base))
	for _, p := range paths {
		inner = inner.Insert(coap.URIPath, []byte(p))
	}
	for _, q := range queries {
		inner = inner.Insert(coap.URIQuery, []byte(q))
	}
	return inner, outer, nil
}

// decomposeURI splits an absolute URI into "scheme://host[:port]" and the
// percent-decoded path segments and query arguments (RFC 7252 §6.4 steps
// 1-9, §6.5 for the recomposition of the base).
func decomposeURI(uri string) (base string, paths, queries []string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: Proxy-Uri %q: %s", ErrMessage, uri, why)
	}
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || !validScheme(scheme) {
		return "", nil, nil, bad("not an absolute URI with an authority")
	}
	scheme = strings.ToLower(scheme)
	if strings.ContainsRune(rest, '#') {
		return "", nil, nil, bad("fragment") // RFC 7252 §6.4 step 3
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, rest := rest[:end], rest[end:]
	if strings.ContainsRune(authority, '@') {
		return "", nil, nil, bad("userinfo") // RFC 8613 §4.1.3.3 note
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		i := strings.IndexByte(authority, ']')
		if i < 0 {
			return "", nil, nil, bad("unterminated IP literal")
		}
		host, port = authority[:i+1], authority[i+1:]
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		host, port = authority[:i], authority[i:]
	}
	if host == "" {
		return "", nil, nil, bad("empty host")
	}
	if port != "" {
		if port[0] != ':' {
			return "", nil, nil, bad("garbage after host")
		}
		port = port[1:]
		if port != "" {
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return "", nil, nil, bad("bad port")
			}
			port = strconv.FormatUint(n, 10)
		}
	}
	if port == defaultPorts[scheme] {
		port = ""
	}
	base = scheme + "://" + strings.ToLower(host)
	if port != "" {
		base += ":" + port
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if path != "" && path != "/" {
		for _, seg := range strings.Split(path[1:], "/") {
			s, err := pctDecode(seg)
			if err != nil {
				return "", nil, nil, bad(err.Error())
			}
			paths = append(paths, s)
		}
	}
	if hasQuery && query != "" {
		for _, arg := range strings.Split(query, "&") {
			s, err := pctDecode(arg)
			if err != nil {
				return "", nil, nil, bad(err.Error())
			}
			queries = append(queries, s)
		}
	}
	return base, paths, queries, nil
}

// validScheme checks RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		alpha := c|0x20 >= 'a' && c|0x20 <= 'z'
		if !alpha && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

func pctDecode(s string) (string, error) {
	if !strings.ContainsRune(s, '%') {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated percent-encoding")
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("bad percent-encoding %q", s[i:i+3])
		}
		b = append(b, byte(hi<<4|lo))
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c|0x20 >= 'a' && c|0x20 <= 'f':
		return int(c|0x20-'a') + 10
	}
	return -1
}
