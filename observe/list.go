package observe

import (
	"cmp"
	"slices"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
)

// Observation is one resource the hub observes upstream, as an operator
// sees it.
type Observation struct {
	// Resource is the registration's target: its Proxy-Uri, its Uri-*
	// options composed, or for a request to the proxy itself (a reverse
	// route, the broker) its path. Of a protected (OSCORE) observation
	// only the outer options count, so the path is usually not there
	// (RFC 8613 §4.1.3.1).
	Resource  string
	Observers int
	Protected bool
}

// Observations lists up to max of the hub's observations that have a
// representation, most observers first. It holds the hub's lock for one
// pass over them.
func (h *Hub) Observations(max int) []Observation {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Observation, 0, min(max, len(h.entries)))
	type ref struct {
		e *entry
		n int
	}
	refs := make([]ref, 0, len(h.entries))
	for _, e := range h.entries {
		if e.state == stateActive && len(e.obs) > 0 {
			refs = append(refs, ref{e, len(e.obs)})
		}
	}
	slices.SortFunc(refs, func(a, b ref) int { return cmp.Compare(b.n, a.n) })
	if len(refs) > max {
		refs = refs[:max]
	}
	for _, r := range refs {
		out = append(out, Observation{Resource: r.e.name, Observers: r.n, Protected: r.e.protected})
	}
	return out
}

// resourceOf names a registration's target for people.
func resourceOf(m *coap.Message) string {
	if u, ok := m.Options.Get(coap.ProxyURI); ok {
		return string(u)
	}
	scheme := "coap"
	if s, ok := m.Options.Get(coap.ProxyScheme); ok {
		scheme = string(s)
	}
	if _, ok := m.Options.Get(coap.URIHost); ok {
		return coap.URIFromOptions(m.Options, scheme, "", coap.DefaultPort(scheme)).String()
	}
	var b strings.Builder
	for v := range m.Options.All(coap.URIPath) {
		b.WriteString("/")
		b.WriteString(string(v))
	}
	if b.Len() == 0 {
		b.WriteString("/")
	}
	sep := "?"
	for v := range m.Options.All(coap.URIQuery) {
		b.WriteString(sep)
		b.WriteString(string(v))
		sep = "&"
	}
	return b.String()
}
