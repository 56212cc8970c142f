package observe

import (
	"encoding/binary"

	"github.com/opaque-edge/gatewayd/coap"
)

// DefaultKey names the resource state a GET or FETCH observes: the method,
// the effective request URI (RFC 7252 §6.5) from Proxy-Uri, from
// Proxy-Scheme and the Uri-* options, or from the Uri-* options alone for
// a reverse route, every other option that is a cache key (§5.4.6) except
// Observe (RFC 7641 §2), the payload (RFC 8132 §2: part of a FETCH's key),
// and whether the request came over DTLS (coap and coaps are different
// origins, §11.2). Two requests with the same key can share one upstream
// observation.
//
// ok is false for a request whose target cannot be normalized with
// certainty; the hub then gives that observer an upstream registration of
// its own rather than guessing.
//
// ETag and Hop-Limit are left out: a request ETag asks for validation
// (§5.6.2) and selects no representation, and Hop-Limit (RFC 8768) only
// bounds the path the one upstream registration takes.
func DefaultKey(r *coap.Request) (string, bool) {
	m := r.Msg
	if m == nil || !m.Code.IsSafe() {
		return "", false
	}
	b := make([]byte, 0, 64+len(m.Payload))
	b = append(b, 1, byte(m.Code)) // 1: the version of this encoding
	if r.Secure {
		b = append(b, 's')
	} else {
		b = append(b, 'p')
	}
	var u *coap.URI
	switch {
	case m.Options.Has(coap.ProxyURI):
		if m.Options.Has(coap.ProxyScheme) || hasURIOptions(m.Options) || count(m.Options, coap.ProxyURI) > 1 {
			// §5.10.2: Proxy-Uri excludes the Uri-* options.
			return "", false
		}
		pu, _ := m.Options.Get(coap.ProxyURI)
		var err error
		if u, err = coap.ParseURI(string(pu)); err != nil {
			return "", false
		}
		b = append(b, 'F')
	case m.Options.Has(coap.ProxyScheme):
		scheme, _ := m.Options.Get(coap.ProxyScheme)
		host, ok := m.Options.Get(coap.URIHost)
		if !ok {
			return "", false
		}
		u = coap.URIFromOptions(m.Options, string(scheme), string(host), coap.DefaultPort(string(scheme)))
		b = append(b, 'F')
	default:
		// A reverse route: the URI is relative to this proxy.
		u = coap.URIFromOptions(m.Options, "", "", 0)
		b = append(b, 'R')
	}
	b = field(b, []byte(u.String()))
	for _, o := range m.Options {
		if !inKey(o.ID) {
			continue
		}
		b = append(b, 'o', byte(o.ID>>8), byte(o.ID))
		b = field(b, o.Value)
	}
	b = append(b, 'b')
	b = field(b, m.Payload)
	return string(b), true
}

// inKey reports whether an option other than the request URI's selects
// the representation.
func inKey(id coap.OptionID) bool {
	switch id {
	case coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.ProxyURI, coap.ProxyScheme:
		return false // in the URI
	case coap.Observe, coap.ETag, coap.HopLimit:
		return false
	}
	return !id.NoCacheKey()
}

func field(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func hasURIOptions(o coap.Options) bool {
	for _, opt := range o {
		switch opt.ID {
		case coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery:
			return true
		}
	}
	return false
}

func count(o coap.Options, id coap.OptionID) int {
	n := 0
	for range o.All(id) {
		n++
	}
	return n
}
