package rd

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
)

// criterion is one search criterion of a lookup (RFC 9176 §6.2): an
// attribute name and, optionally, a value, which ends in "*" to match by
// prefix (RFC 6690 §4.1).
type criterion struct {
	name, value      string
	hasValue, prefix bool
}

func parseCriterion(q string) criterion {
	name, value, hasValue := strings.Cut(q, "=")
	c := criterion{name: name, value: value, hasValue: hasValue}
	if v, ok := strings.CutSuffix(value, "*"); ok && hasValue {
		c.value, c.prefix = v, true
	}
	return c
}

// relationTypes are the attributes whose value is a space-separated list
// (relation-types in RFC 6690 §2; ct in RFC 7252 §7.2.1): a criterion
// matches any one of the values (RFC 9176 §6.2).
func relationTypes(name string) bool {
	switch name {
	case "rel", "rev", "rt", "if", "ct":
		return true
	}
	return false
}

// matchValue matches the criterion's value against an attribute's.
func (c criterion) matchValue(v string) bool {
	if !c.hasValue {
		return true
	}
	one := func(s string) bool { return s == c.value || c.prefix && strings.HasPrefix(s, c.value) }
	if !relationTypes(c.name) {
		return one(v)
	}
	for f := range strings.FieldsSeq(v) {
		if one(f) {
			return true
		}
	}
	return false
}

// matches applies the criterion to a link's target (as "href") and
// parameters.
func (c criterion) matches(href string, params []Param) bool {
	if c.name == "href" {
		return c.matchValue(href)
	}
	for _, p := range params {
		if p.Name != c.name {
			continue
		}
		if !c.hasValue || p.HasValue && c.matchValue(p.Value) {
			return true
		}
	}
	return false
}

// lookupQuery is a parsed lookup request.
type lookupQuery struct {
	res         resource // resLookupEP or resLookupRes
	crit        []criterion
	page, count int
	hasCount    bool
}

// parseLookup reads page, count and the search criteria (§6.2).
func parseLookup(m *coap.Message, res resource) (lookupQuery, string) {
	q := lookupQuery{res: res}
	hasPage := false
	for v := range m.Options.All(coap.URIQuery) {
		s := string(v)
		name, value, _ := strings.Cut(s, "=")
		switch name {
		case "page", "count":
			n, err := strconv.ParseUint(value, 10, 31)
			if err != nil || strings.HasPrefix(value, "+") {
				return q, "rd: " + name + " must be a number"
			}
			if name == "page" {
				q.page, hasPage = int(n), true
			} else {
				q.count, q.hasCount = int(n), true
			}
		default:
			q.crit = append(q.crit, parseCriterion(s))
		}
	}
	if hasPage && !q.hasCount {
		return q, "rd: page needs count (RFC 9176 §6.2)"
	}
	return q, ""
}

// epParams are a registration's endpoint attributes as endpoint lookup
// shows them (§6.3) and as criteria match them: ep, d, base, rt
// "core.rd-ep", then the further attributes.
func (r *registration) epParams() []Param {
	ps := make([]Param, 0, 4+len(r.attrs))
	ps = append(ps, Param{Name: "ep", Value: r.ep, HasValue: true})
	if r.d != "" {
		ps = append(ps, Param{Name: "d", Value: r.d, HasValue: true})
	}
	ps = append(ps, Param{Name: "base", Value: r.effBase, HasValue: true}, Param{Name: "rt", Value: "core.rd-ep", HasValue: true})
	return append(ps, r.attrs...)
}

func (r *registration) location() string { return "/" + pathRD + "/" + r.id }

// answerLocked computes the lookup's links, paged (§6.2: page counts
// links from zero in pages of count).
func (d *Directory) answerLocked(q *lookupQuery) string {
	var out []Link
	for _, r := range d.order {
		ep := r.epParams()
		epMatches := func(c criterion) bool { return c.matches(r.location(), ep) }
		if q.res == resLookupEP {
			// An endpoint matches a criterion that it or one of its
			// resource links matches (§6.2).
			ok := true
			for _, c := range q.crit {
				if !epMatches(c) && !slices.ContainsFunc(r.resolved, func(l Link) bool { return c.matches(l.Target, l.Params) }) {
					ok = false
					break
				}
			}
			if ok {
				out = append(out, Link{Target: r.location(), Params: ep})
			}
			continue
		}
		for _, l := range r.resolved {
			ok := true
			// A resource link matches a criterion that it or its
			// endpoint matches (§6.2).
			for _, c := range q.crit {
				if !c.matches(l.Target, l.Params) && !epMatches(c) {
					ok = false
					break
				}
			}
			if ok {
				out = append(out, l)
			}
		}
	}
	if q.hasCount {
		start := len(out)
		if q.count > 0 && q.page <= len(out)/q.count {
			start = q.page * q.count
		}
		out = out[start:min(start+q.count, len(out))]
	}
	return FormatLinks(out)
}

// lookup answers a lookup (§6) and, with Observe=0 and a hub that asked
// for an upstream observation, keeps answering it as registrations come
// and go (§6.2: every time the set of matching links changes).
func (d *Directory) lookup(ctx context.Context, w coap.ResponseWriter, r *coap.Request, res resource) error {
	m := r.Msg
	if v, ok := m.Options.Get(coap.Accept); ok && coap.DecodeUint(v) != cfLinkFormat {
		return d.fail(w, coap.NotAcceptable, "rd: lookups are application/link-format (40)")
	}
	q, diag := parseLookup(m, res)
	if diag != "" {
		return d.fail(w, coap.BadRequest, diag)
	}
	obs, hasObs := m.Options.Uint(coap.Observe)
	u, hasUp := r.Observer, r.Observer != nil
	d.mu.Lock()
	payload := d.answerLocked(&q)
	resp := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, cfLinkFormat)
	var id uint64
	if hasObs && obs == 0 && hasUp && !d.closed {
		d.nextSub++
		id = d.nextSub
		d.subs[id] = &subscription{q: q, last: payload, u: u}
		resp.Options = resp.Options.SetUint(coap.Observe, d.seq)
	}
	d.mu.Unlock()
	d.lookupsServed.Add(1)
	if id != 0 {
		u.Started(func(context.Context) error {
			d.mu.Lock()
			delete(d.subs, id)
			d.mu.Unlock()
			return nil
		})
	}
	return w.WriteResponse(resp)
}

// notifyChanged answers every observed lookup again after a change and
// hands those whose answer differs to the hub. It runs with op held, so
// that notifications go out in the order of the changes; Observer.Notify
// never blocks.
func (d *Directory) notifyChanged() {
	type note struct {
		u coap.Observer
		m *coap.Message
	}
	var notes []note
	d.mu.Lock()
	seq := (d.seq + 1) & 0xffffff
	for _, s := range d.subs {
		p := d.answerLocked(&s.q)
		if p == s.last {
			continue
		}
		s.last = p
		n := &coap.Message{Code: coap.Content, Payload: []byte(p)}
		n.Options = n.Options.SetUint(coap.ContentFormat, cfLinkFormat).SetUint(coap.Observe, seq)
		notes = append(notes, note{s.u, n})
	}
	if len(notes) > 0 {
		d.seq = seq
	}
	d.mu.Unlock()
	for _, n := range notes {
		n.u.Notify(n.m)
		d.notified.Add(1)
	}
}
