package rd

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrLinkFormat is wrapped by every error ParseLinks returns.
var ErrLinkFormat = errors.New("rd: bad link format")

// Link is one link-value of a CoRE Link Format document (RFC 6690 §2):
// the target as written between the angle brackets, and the link
// parameters in the order they came.
type Link struct {
	Target string  `json:"target"`
	Params []Param `json:"params,omitempty"`
}

// Param is one link parameter. A parameter without a value ("obs") has
// HasValue false. Value is unquoted: a quoted-string's escapes are
// resolved.
type Param struct {
	Name     string `json:"name"`
	Value    string `json:"value,omitempty"`
	HasValue bool   `json:"has_value,omitempty"`
}

// Get returns the value of the first parameter named name.
func (l Link) Get(name string) (string, bool) {
	for _, p := range l.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// maxParams bounds the parameters of one link: a real link has a handful.
const maxParams = 32

// ParseLinks reads a link-format document (RFC 6690 §2): link-values
// separated by commas, each "<URI-Reference>" and ";"-separated
// parameters, a parameter's value a token or a quoted-string. White
// space around the separators is skipped, as documents written by hand
// (and the RFCs' own examples) have it. maxLinks bounds the links; more
// is an error, as is anything that is not link format. An empty document
// has no links. The targets are kept as written: no percent-decoding,
// which link format does not have (RFC 9176 Appendix B.4).
func ParseLinks(doc string, maxLinks int) ([]Link, error) {
	if !utf8.ValidString(doc) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrLinkFormat)
	}
	p := &lfParser{s: doc}
	var links []Link
	p.space()
	if p.done() {
		return nil, nil
	}
	for {
		if len(links) == maxLinks {
			return nil, fmt.Errorf("%w: more than %d links", ErrLinkFormat, maxLinks)
		}
		l, err := p.link()
		if err != nil {
			return nil, err
		}
		links = append(links, l)
		p.space()
		if p.done() {
			return links, nil
		}
		if !p.eat(',') {
			return nil, p.errorf("want \",\" between links")
		}
		p.space()
	}
}

type lfParser struct {
	s   string
	off int
}

func (p *lfParser) done() bool { return p.off >= len(p.s) }

func (p *lfParser) eat(c byte) bool {
	if p.off < len(p.s) && p.s[p.off] == c {
		p.off++
		return true
	}
	return false
}

// space skips white space, which RFC 6690's grammar does not have but
// documents do (line breaks after commas, spaces after semicolons).
func (p *lfParser) space() {
	for p.off < len(p.s) {
		switch p.s[p.off] {
		case ' ', '\t', '\r', '\n':
			p.off++
		default:
			return
		}
	}
}

func (p *lfParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrLinkFormat, p.off, fmt.Sprintf(format, args...))
}

func (p *lfParser) link() (Link, error) {
	var l Link
	if !p.eat('<') {
		return l, p.errorf("want \"<\"")
	}
	end := strings.IndexByte(p.s[p.off:], '>')
	if end < 0 {
		return l, p.errorf("no \">\" after the target")
	}
	l.Target = p.s[p.off : p.off+end]
	if i := strings.IndexFunc(l.Target, badURIRune); i >= 0 {
		p.off += i
		return l, p.errorf("%q in a target", l.Target[i])
	}
	p.off += end + 1
	for {
		p.space()
		if !p.eat(';') {
			return l, nil
		}
		p.space()
		if len(l.Params) == maxParams {
			return l, p.errorf("more than %d parameters", maxParams)
		}
		param, err := p.param()
		if err != nil {
			return l, err
		}
		l.Params = append(l.Params, param)
	}
}

// badURIRune is what a URI reference in link format cannot hold: white
// space, controls, and the delimiters of the format itself.
func badURIRune(r rune) bool {
	return r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '<' || r == '>' || r == '"' || r == '\\'
}

func (p *lfParser) param() (Param, error) {
	var q Param
	start := p.off
	for p.off < len(p.s) && isParmnameChar(p.s[p.off]) {
		p.off++
	}
	if p.off == start {
		return q, p.errorf("want a parameter name")
	}
	q.Name = p.s[start:p.off]
	p.space()
	if !p.eat('=') {
		return q, nil
	}
	p.space()
	q.HasValue = true
	if p.eat('"') {
		var b strings.Builder
		for {
			if p.done() {
				return q, p.errorf("unterminated quoted-string")
			}
			c := p.s[p.off]
			p.off++
			switch {
			case c == '"':
				q.Value = b.String()
				return q, nil
			case c == '\\':
				// quoted-pair (RFC 7230 §3.2.6).
				if p.done() || p.s[p.off] < ' ' || p.s[p.off] == 0x7f {
					return q, p.errorf("bad quoted-pair")
				}
				b.WriteByte(p.s[p.off])
				p.off++
			case c < ' ' && c != '\t', c == 0x7f:
				return q, p.errorf("control character in a quoted-string")
			default:
				b.WriteByte(c)
			}
		}
	}
	start = p.off
	for p.off < len(p.s) && isPtokenChar(p.s[p.off]) {
		p.off++
	}
	if p.off == start {
		return q, p.errorf("want a value after \"=\"")
	}
	q.Value = p.s[start:p.off]
	return q, nil
}

// isParmnameChar is RFC 5987's attr-char and "*" (for "title*").
func isParmnameChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$&+-.^_`|~*", c) >= 0
}

// isPtokenChar is RFC 6690 §2's ptokenchar.
func isPtokenChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'()*+-./:<=>?@[]^_`{|}~", c) >= 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// quotedAlways are the parameters written quoted whatever their value:
// those RFC 6690's grammar writes only quoted, and base, a URI, as RFC
// 9176's examples write it.
func quotedAlways(name string) bool {
	return name == "anchor" || name == "title" || name == "base"
}

// String writes the link in link format. A value goes as a token when it
// is one, else as a quoted-string with '"' and '\' escaped: a name a
// registrant chose cannot end the value or the link.
func (l Link) String() string {
	var b strings.Builder
	l.writeTo(&b)
	return b.String()
}

func (l Link) writeTo(b *strings.Builder) {
	b.WriteByte('<')
	b.WriteString(l.Target)
	b.WriteByte('>')
	for _, p := range l.Params {
		writeParam(b, p)
	}
}

func writeParam(b *strings.Builder, p Param) {
	b.WriteByte(';')
	b.WriteString(p.Name)
	if !p.HasValue {
		return
	}
	b.WriteByte('=')
	if p.Value != "" && !quotedAlways(p.Name) && isPtoken(p.Value) {
		b.WriteString(p.Value)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(p.Value); i++ {
		if c := p.Value[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(p.Value[i])
	}
	b.WriteByte('"')
}

func isPtoken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isPtokenChar(s[i]) {
			return false
		}
	}
	return true
}

// FormatLinks writes links as one link-format document.
func FormatLinks(links []Link) string {
	var b strings.Builder
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		l.writeTo(&b)
	}
	return b.String()
}

// --- URI references (RFC 3986) as far as Limited Link Format needs ---

// hasScheme reports a URI (not a relative reference): scheme ":" ...
// (RFC 3986 §3.1).
func hasScheme(ref string) bool {
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return true
		default:
			return false
		}
	}
	return false
}

// limited reports a reference Limited Link Format allows (RFC 9176
// Appendix C): a URI, or a path-absolute reference ("/" and not "//").
func limited(ref string) bool {
	if hasScheme(ref) {
		return true
	}
	return strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, "//")
}

// resolve resolves a Limited Link Format reference against a base of the
// form scheme://authority (RFC 3986 §5.2.2): a URI stays as it is; a
// path-absolute reference takes the base's scheme and authority.
func resolve(base, ref string) string {
	if hasScheme(ref) {
		return ref
	}
	return origin(base) + ref
}

// origin is scheme://authority of a URI: the base without path, query or
// fragment.
func origin(uri string) string {
	i := strings.Index(uri, "://")
	if i < 0 {
		return uri
	}
	rest := uri[i+3:]
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		return uri[:i+3+j]
	}
	return uri
}
