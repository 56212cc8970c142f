package rd

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opaque-edge/gatewayd/coap"
)

// params are a registration's or update's query parameters.
type params struct {
	ep, d, base                 string
	lt                          uint32
	hasEP, hasD, hasLT, hasBase bool
	proxy                       bool
	extra                       []Param // endpoint attributes: any other parameter
}

// parseParams reads the query. A diagnostic says what is wrong (4.00).
func (d *Directory) parseParams(m *coap.Message) (params, string) {
	var p params
	for q := range m.Options.All(coap.URIQuery) {
		name, value, hasValue := strings.Cut(string(q), "=")
		switch name {
		case "ep", "d", "lt", "base", "proxy":
			if !hasValue {
				return p, "rd: " + name + " needs a value"
			}
		}
		switch name {
		case "ep":
			if p.hasEP {
				return p, "rd: ep given twice"
			}
			if diag := checkName("ep", value); diag != "" {
				return p, diag
			}
			p.ep, p.hasEP = value, true
		case "d":
			if p.hasD {
				return p, "rd: d given twice"
			}
			if diag := checkName("d", value); diag != "" {
				return p, diag
			}
			p.d, p.hasD = value, true
		case "lt":
			if p.hasLT {
				return p, "rd: lt given twice"
			}
			lt, diag := d.checkLT(value)
			if diag != "" {
				return p, diag
			}
			p.lt, p.hasLT = lt, true
		case "base":
			if p.hasBase {
				return p, "rd: base given twice"
			}
			if diag := checkBase(value); diag != "" {
				return p, diag
			}
			p.base, p.hasBase = value, true
		case "proxy":
			// aiocoap's RD extension: the registrant asks to be reached
			// through the RD (routes = "ask").
			if value != "yes" {
				return p, "rd: proxy can only be yes"
			}
			p.proxy = true
		case "page", "count", "href", "rt", "anchor":
			// Lookups read these; an endpoint attribute of that name
			// would confuse them.
			return p, "rd: " + name + " is not a registration parameter"
		default:
			a := Param{Name: name, Value: value, HasValue: hasValue}
			if diag := checkAttr(a); diag != "" {
				return p, diag
			}
			// RFC 9176 §5.3.1: a later value overrides an earlier one.
			if i := slices.IndexFunc(p.extra, func(x Param) bool { return x.Name == name }); i >= 0 {
				p.extra[i] = a
				continue
			}
			if len(p.extra) == maxExtra {
				return p, fmt.Sprintf("rd: more than %d endpoint attributes", maxExtra)
			}
			p.extra = append(p.extra, a)
		}
	}
	return p, ""
}

// checkName checks an endpoint name or sector (RFC 9176 §5): UTF-8, 1 to
// 63 bytes, no character 0-31 or 127-159.
func checkName(key, v string) string {
	switch {
	case v == "":
		return "rd: " + key + " is empty"
	case len(v) > 63:
		return "rd: " + key + " is longer than 63 bytes (RFC 9176 §5)"
	case !utf8.ValidString(v):
		return "rd: " + key + " is not UTF-8"
	case strings.ContainsFunc(v, controlRune):
		return "rd: " + key + " contains a control character (RFC 9176 §5)"
	}
	return ""
}

func controlRune(r rune) bool { return r < 32 || r >= 127 && r <= 159 }

// checkAttr checks a further endpoint attribute: a parameter name link
// format can carry, a value of at most 255 bytes of UTF-8 without control
// characters, so that it goes into a lookup answer as a quoted-string.
func checkAttr(a Param) string {
	if a.Name == "" || len(a.Name) > 63 || strings.ContainsFunc(a.Name, func(r rune) bool { return r >= 0x80 || !isParmnameChar(byte(r)) }) {
		return fmt.Sprintf("rd: %q is not a parameter name link format can carry", a.Name)
	}
	if len(a.Value) > 255 || !utf8.ValidString(a.Value) || strings.ContainsFunc(a.Value, controlRune) {
		return "rd: the value of " + a.Name + " is over 255 bytes, not UTF-8, or has a control character"
	}
	return ""
}

// checkLT reads a lifetime (RFC 9176 §5: 1-4294967295 seconds) and
// applies min_lifetime and max_lifetime.
func (d *Directory) checkLT(v string) (uint32, string) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 || strings.HasPrefix(v, "+") {
		return 0, "rd: lt must be 1-4294967295 seconds (RFC 9176 §5)"
	}
	lo, hi := d.cfg.MinLifetime.Duration/time.Second, d.cfg.MaxLifetime.Duration/time.Second
	if time.Duration(n) < lo || time.Duration(n) > hi {
		return 0, fmt.Sprintf("rd: lt %d is outside %d-%d (min_lifetime, max_lifetime)", n, lo, hi)
	}
	return uint32(n), ""
}

// checkBase checks a base URI (RFC 9176 §5): an absolute URI with a host,
// no query or fragment, no zone identifier, not link-local (whose links
// only clients on that link could use, §6.1), and nothing that could
// break a link-format answer.
func checkBase(v string) string {
	if len(v) > 255 || strings.ContainsFunc(v, badURIRune) {
		return "rd: base is over 255 bytes or has characters a URI cannot"
	}
	u, err := coap.ParseURI(v)
	if err != nil || !strings.Contains(v, "://") {
		return "rd: base is not an absolute URI with a host"
	}
	if strings.ContainsAny(v, "?#") {
		return "rd: base has a query or fragment (RFC 9176 §5)"
	}
	if a, err := netip.ParseAddr(u.Host); err == nil {
		if a.Zone() != "" || strings.Contains(v, "%25") {
			return "rd: base has a zone identifier (RFC 9176 §5)"
		}
		if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
			return "rd: base is link-local; register a routable address"
		}
	}
	return ""
}

// parseDoc parses a registration's links: link format, at most max_links
// of them, in Limited Link Format (RFC 9176 Appendix C: every target and
// anchor a URI or a path-absolute reference).
func (d *Directory) parseDoc(doc string) ([]Link, string) {
	links, err := ParseLinks(doc, d.cfg.MaxLinks)
	if err != nil {
		return nil, err.Error()
	}
	for _, l := range links {
		if !limited(l.Target) {
			return nil, fmt.Sprintf("rd: <%s> is neither a URI nor path-absolute (RFC 9176 Appendix C)", l.Target)
		}
		for _, p := range l.Params {
			if p.Name == "anchor" && (!p.HasValue || !limited(p.Value)) {
				return nil, fmt.Sprintf("rd: anchor %q is neither a URI nor path-absolute (RFC 9176 Appendix C)", p.Value)
			}
		}
	}
	return links, ""
}

// lifetime is the lifetime of a registration given p: its lt, or the
// default.
func (d *Directory) lifetime(p params) uint32 {
	if p.hasLT {
		return p.lt
	}
	return uint32(d.cfg.DefaultLifetime.Duration / time.Second)
}
