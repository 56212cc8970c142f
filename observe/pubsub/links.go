package pubsub

import (
	"strings"
)

// link is one CoRE Link Format entry (RFC 6690) of the broker's.
type link struct {
	href string
	rt   string // space-separated resource types
	ct   string
	obs  bool
}

func (l link) String() string {
	var sb strings.Builder
	sb.WriteString("<" + l.href + ">")
	if l.rt != "" {
		sb.WriteString(`;rt="` + l.rt + `"`)
	}
	if l.ct != "" {
		sb.WriteString(";ct=" + l.ct)
	}
	if l.obs {
		sb.WriteString(";obs")
	}
	return sb.String()
}

// attr returns the values of an attribute for query matching.
func (l link) attr(name string) ([]string, bool) {
	switch name {
	case "href":
		return []string{l.href}, true
	case "rt":
		if l.rt == "" {
			return nil, false
		}
		return strings.Fields(l.rt), true
	case "ct":
		if l.ct == "" {
			return nil, false
		}
		return strings.Fields(l.ct), true
	case "obs":
		return []string{""}, l.obs
	}
	return nil, false
}

// filterLinks keeps the links that match every query (RFC 6690 §4.1).
func filterLinks(ls []link, queries []string) []link {
	var out []link
	for _, l := range ls {
		ok := true
		for _, q := range queries {
			if !matchQuery(q, l.attr) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// matchQuery applies one "name=value" query to a link's attributes:
// value matches any of the attribute's space-separated values, and a
// trailing "*" matches by prefix (RFC 6690 §4.1).
func matchQuery(q string, attr func(string) ([]string, bool)) bool {
	name, value, hasValue := strings.Cut(q, "=")
	vals, ok := attr(name)
	if !ok {
		return false
	}
	if !hasValue {
		return true
	}
	prefix, wild := strings.CutSuffix(value, "*")
	for _, v := range vals {
		if v == value || (wild && strings.HasPrefix(v, prefix)) {
			return true
		}
	}
	return false
}

// FilterLinks applies RFC 6690 §4.1 query filtering to link-format
// entries such as the ones Links returns, for a /.well-known/core that
// must answer "?rt=core.ps" or "?rt=core.ps.coll" (draft §2.3). Each entry
// is one link; a query names an attribute ("rt", "ct", "href", ...) and a
// value, with a trailing "*" for a prefix match. Entries that cannot be
// parsed never match.
func FilterLinks(entries []string, queries []string) []string {
	var out []string
	for _, e := range entries {
		attrs, ok := parseLink(e)
		if !ok {
			continue
		}
		match := true
		for _, q := range queries {
			if !matchQuery(q, func(name string) ([]string, bool) {
				v, ok := attrs[name]
				return v, ok
			}) {
				match = false
				break
			}
		}
		if match {
			out = append(out, e)
		}
	}
	return out
}

// parseLink splits one link-value, <href>;a=b;c="d e";f, into its
// attributes ("href" included), each split at spaces.
func parseLink(s string) (map[string][]string, bool) {
	if len(s) > 4096 || !strings.HasPrefix(s, "<") {
		return nil, false
	}
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return nil, false
	}
	attrs := map[string][]string{"href": {s[1:end]}}
	rest := s[end+1:]
	for rest != "" {
		if rest[0] != ';' {
			return nil, false
		}
		rest = rest[1:]
		i := 0
		for i < len(rest) && rest[i] != '=' && rest[i] != ';' {
			i++
		}
		name := strings.TrimSpace(rest[:i])
		rest = rest[i:]
		var value string
		if rest != "" && rest[0] == '=' {
			rest = rest[1:]
			if rest != "" && rest[0] == '"' {
				j := strings.IndexByte(rest[1:], '"')
				if j < 0 {
					return nil, false
				}
				value, rest = rest[1:1+j], rest[2+j:]
			} else {
				j := strings.IndexByte(rest, ';')
				if j < 0 {
					j = len(rest)
				}
				value, rest = rest[:j], rest[j:]
			}
		}
		if name == "" || len(attrs) > 32 {
			return nil, false
		}
		vals := strings.Fields(value)
		if len(vals) == 0 {
			vals = []string{""}
		}
		attrs[name] = append(attrs[name], vals...)
	}
	return attrs, true
}

// validResourceType reports a resource-type property that the broker can
// list as an rt attribute of a link (draft §2.3): space-separated
// relation types of RFC 6690 §2 (a registered name or a URI), each of
// visible ASCII without the characters that would end the quoted string,
// the link or the link's attribute: '"', '\\', '<', '>', ',' and ';'. A
// client must not be able to add links or attributes to
// /.well-known/core through a topic's configuration.
func validResourceType(s string) bool {
	if strings.TrimSpace(s) == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ':
		case c <= 0x20 || c >= 0x7f:
			return false
		case strings.IndexByte(`"\<>,;`, c) >= 0:
			return false
		}
	}
	return true
}
