package pubsub

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/acl"
	"github.com/opaque-edge/gatewayd/coap"
)

// Content-Formats other than the broker's own (RFC 7252 §12.3).
const (
	cfLinkFormat = 40
	cfCBOR       = 60
)

// errGone is deleteTopic's answer for a topic that no longer exists.
var errGone = errors.New("pubsub: topic gone")

// fail answers a request the broker refuses.
func (b *Broker) fail(w coap.ResponseWriter, code coap.Code, diag string) error {
	b.rejected.Add(1)
	m := &coap.Message{Code: code}
	if diag != "" {
		m.Payload = []byte(diag)
	}
	return w.WriteResponse(m)
}

// stored is the diagnostic of a change the broker refused because it
// could not make it durable: what, and the state directory's condition
// when the error says it, so that a client (and whoever reads its logs)
// learns that retrying will not help until an operator acts. The full
// error, with the path, goes to the log only.
func stored(what string, err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return what + ": state_dir is full"
	case errors.Is(err, syscall.EROFS):
		return what + ": state_dir is read-only"
	case errors.Is(err, fs.ErrPermission):
		return what + ": state_dir is not writable"
	}
	return what
}

// supported lists the critical options the broker understands; a request
// with any other critical option gets 4.02 (RFC 7252 §5.4.1). Among those
// others: OSCORE (the gateway holds no keys, RFC 8613 §8.2), If-Match and
// If-None-Match, and Block1/Block2 (no block-wise transfer here).
var supported = []coap.OptionID{coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.Accept}

func (b *Broker) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request, rest []string) error {
	if id, bad := r.Msg.Options.UnrecognizedCritical(supported...); bad {
		return b.fail(w, coap.BadOption, "pubsub: unsupported critical option "+id.String())
	}
	if diag := b.deny(r, rest); diag != "" {
		return b.fail(w, coap.Forbidden, diag)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return b.fail(w, coap.ServiceUnavailable, "pubsub: broker closed")
	}
	switch {
	case len(rest) == 0:
		return b.collection(w, r)
	case len(rest) == 1 && rest[0] != dataSeg:
		b.mu.Lock()
		t := b.topics[rest[0]]
		b.mu.Unlock()
		if t == nil {
			return b.fail(w, coap.NotFound, "")
		}
		return b.topicResource(w, r, t)
	case len(rest) == 2 && rest[0] == dataSeg:
		b.mu.Lock()
		t := b.byData[rest[1]]
		b.mu.Unlock()
		if t == nil {
			return b.fail(w, coap.NotFound, "")
		}
		return b.topicData(ctx, w, r, t)
	}
	return b.fail(w, coap.NotFound, "")
}

// deny applies the access lists to a request for the broker's resource at
// rest (the path below the collection): "" when the client may go on,
// else the diagnostic of the 4.03 it gets. The draft leaves the policy
// to the broker and asks for a 4.xx "such as 4.03 Forbidden" when a
// client does not meet it (draft §2.4.3, §2.5, §5). 4.03 rather than 4.01
// (RFC 7252 §5.9.2.2): a client is refused for who it is, and no better
// authentication on this connection changes that, unless it comes back
// over DTLS with a listed identity, which the diagnostic says.
//
// Administration is creating a topic (POST to the collection) and
// changing or deleting one (POST, iPATCH, DELETE on a topic); publishing
// is PUT and DELETE on topic-data (§3.2.1, §3.2.4: deleting topic-data is
// the publisher's); subscribing is GET on topic-data, with or without
// Observe (§3.2.2, §3.3). Discovery and reading topic configurations are
// open to every client the proxy admits. The lists are checked before the
// resource is looked up, so a refused client learns nothing of what
// exists.
func (b *Broker) deny(r *coap.Request, rest []string) string {
	code := r.Msg.Code
	var list *acl.List
	var what string
	switch {
	case len(rest) == 0 && code == coap.POST,
		len(rest) == 1 && rest[0] != dataSeg && (code == coap.POST || code == coap.IPATCH || code == coap.DELETE):
		list, what = &b.admins, "admins may create, change or delete topics"
	case len(rest) == 2 && rest[0] == dataSeg && (code == coap.PUT || code == coap.DELETE):
		list, what = b.pubs, "publishers may publish or delete topic-data"
	case len(rest) == 2 && rest[0] == dataSeg && code == coap.GET:
		list, what = b.subs, "subscribers may read or subscribe to topic-data"
	}
	if list == nil {
		return ""
	}
	c := b.clientOf(r)
	if list.Allows(c) {
		return ""
	}
	b.warn("pubsub: request refused by the access lists", "client", c.String(), "code", code.String(), "path", b.prefix+"/"+strings.Join(rest, "/"))
	return "pubsub: only " + what + " (" + c.String() + " is not listed)"
}

// checkNames bounds the names a client gives (max_name_length): they are
// stored, persisted and listed in every discovery answer.
func (b *Broker) checkNames(p *Properties, seg string) (code coap.Code, diag string) {
	limit := b.cfg.MaxNameLength
	for _, n := range []struct {
		key string
		v   *string
	}{{"topic-name", p.TopicName}, {"resource-type", p.ResourceType}, {"topic-type", p.TopicType}, {"topic-data segment", &seg}} {
		if n.v != nil && len(*n.v) > limit {
			return coap.BadRequest, fmt.Sprintf("pubsub: %s longer than %d bytes (max_name_length)", n.key, limit)
		}
	}
	if p.ResourceType != nil && !validResourceType(*p.ResourceType) {
		return coap.BadRequest, "pubsub: resource-type must be space-separated link relation types (RFC 6690 §2) without \" \\ < > , ;"
	}
	return 0, ""
}

// contentFormat returns the request's Content-Format.
func contentFormat(m *coap.Message) (uint16, bool) {
	v, ok := m.Options.Get(coap.ContentFormat)
	if !ok || len(v) > 2 {
		return 0, false
	}
	return uint16(coap.DecodeUint(v)), true
}

// accepts reports whether the request's Accept option, if any, allows cf.
func accepts(m *coap.Message, cf uint16) bool {
	v, ok := m.Options.Get(coap.Accept)
	return !ok || (len(v) <= 2 && uint16(coap.DecodeUint(v)) == cf)
}

func (b *Broker) isOurs(m *coap.Message) bool {
	cf, ok := contentFormat(m)
	return ok && cf == b.cfg.ContentFormat
}

// --- topic collection (draft §2.4) ---

func (b *Broker) collection(w coap.ResponseWriter, r *coap.Request) error {
	m := r.Msg
	switch m.Code {
	case coap.GET:
		if !accepts(m, cfLinkFormat) {
			return b.fail(w, coap.NotAcceptable, "")
		}
		var queries []string
		for q := range m.Options.All(coap.URIQuery) {
			queries = append(queries, string(q))
		}
		all := b.links(false)
		var sel []link
		if len(queries) == 0 {
			// §2.4.1: the links to the topic resources.
			for _, l := range all {
				if l.rt == RTTopic {
					sel = append(sel, l)
				}
			}
		} else {
			// §2.3.4: rt=core.ps.data (and any other RFC 6690 query)
			// selects among topic and topic-data resources.
			sel = filterLinks(all, queries)
		}
		return b.linkResponse(w, sel)
	case coap.FETCH:
		// §2.4.2: a topic filter, matched property by property.
		if !b.isOurs(m) {
			return b.fail(w, coap.UnsupportedContentFormat, "")
		}
		if !accepts(m, cfLinkFormat) {
			return b.fail(w, coap.NotAcceptable, "")
		}
		f, err := DecodeProperties(m.Payload)
		if err != nil {
			return b.fail(w, coap.BadRequest, err.Error())
		}
		now := b.clock.Now()
		b.mu.Lock()
		var sel []link
		for _, t := range b.topics {
			if b.liveLocked(t, now) && t.props.matches(&f) {
				sel = append(sel, link{href: b.topicPath(t)})
			}
		}
		b.mu.Unlock()
		slices.SortFunc(sel, func(x, y link) int { return strings.Compare(x.href, y.href) })
		return b.linkResponse(w, sel)
	case coap.POST:
		return b.create(w, r)
	}
	return b.fail(w, coap.MethodNotAllowed, "")
}

// linkResponse answers with bare links: the attributes are implied by the
// resource type or constrained by the query (draft §2.3.4, §2.4.1).
func (b *Broker) linkResponse(w coap.ResponseWriter, ls []link) error {
	var sb strings.Builder
	for i, l := range ls {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("<" + l.href + ">")
	}
	resp := &coap.Message{Code: coap.Content}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, cfLinkFormat)
	if sb.Len() > 0 {
		resp.Payload = []byte(sb.String())
	}
	return w.WriteResponse(resp)
}

// checkNew validates properties for a topic as created or replaced, and
// fills in what the broker sets itself.
func (b *Broker) checkNew(p *Properties, now time.Time) (code coap.Code, diag string) {
	if p.Initialize != nil {
		if p.TopicContentFormat == nil {
			return coap.BadRequest, "pubsub: initialize needs topic-content-format"
		}
		if len(p.Initialize) > b.cfg.MaxPayload {
			return coap.RequestEntityTooLarge, "pubsub: initialize over max_payload"
		}
	}
	if p.ExpirationDate != nil {
		if exp, _ := expiry(p); !exp.After(now) {
			return coap.BadRequest, "pubsub: expiration-date in the past"
		}
	} else if d := b.cfg.DefaultExpiration.Duration; d > 0 {
		v := float64(now.Add(d).Unix())
		p.ExpirationDate = &v
	}
	if p.MaxSubscribers == nil && b.cfg.DefaultMaxSubscribers > 0 {
		v := uint64(b.cfg.DefaultMaxSubscribers)
		p.MaxSubscribers = &v
	}
	if p.ObserverCheck == nil {
		v := uint64(DefaultObserverCheck)
		p.ObserverCheck = &v
	}
	return 0, ""
}

// create makes a topic in the HALF CREATED state, or FULLY CREATED with
// "initialize" (draft §2.4.3, §3.1).
func (b *Broker) create(w coap.ResponseWriter, r *coap.Request) error {
	m := r.Msg
	if !b.isOurs(m) {
		return b.fail(w, coap.UnsupportedContentFormat, "")
	}
	p, err := DecodeProperties(m.Payload)
	if err != nil {
		return b.fail(w, coap.BadRequest, err.Error())
	}
	if p.TopicName == nil || *p.TopicName == "" || p.ResourceType == nil || *p.ResourceType == "" {
		return b.fail(w, coap.BadRequest, "pubsub: topic-name and resource-type are required")
	}
	now := b.clock.Now()
	if code, diag := b.checkNew(&p, now); code != 0 {
		return b.fail(w, code, diag)
	}
	var seg string
	if p.TopicData != nil {
		var ok bool
		if seg, ok = b.dataSegment(*p.TopicData); !ok {
			return b.fail(w, coap.BadRequest, "pubsub: topic-data must be "+b.prefix+"/"+dataSeg+"/<segment> on this broker")
		}
	}
	if code, diag := b.checkNames(&p, seg); code != 0 {
		return b.fail(w, code, diag)
	}
	creator := b.clientOf(r).Key(b.radio)

	b.mu.Lock()
	switch {
	case len(b.topics) >= b.cfg.MaxTopics:
		b.mu.Unlock()
		return b.fail(w, coap.Forbidden, "pubsub: topic limit reached")
	case b.created[creator] >= b.cfg.MaxTopicsPerClient:
		// 4.03, not 5.03: RFC 7252 §5.9.3.4 makes 5.03 a passing state
		// of the server, to retry after Max-Age, while this holds until
		// the client deletes one of its topics; draft §2.4.3 asks for a
		// 4.xx (such as 4.03) when the client does not meet the broker's
		// requirements for creating a topic.
		b.mu.Unlock()
		return b.fail(w, coap.Forbidden, fmt.Sprintf("pubsub: %s has created %d topics (max_topics_per_client); delete one first", creator, b.cfg.MaxTopicsPerClient))
	case b.byName[*p.TopicName] != nil:
		b.mu.Unlock()
		return b.fail(w, coap.BadRequest, "pubsub: topic-name in use")
	case seg != "" && b.byData[seg] != nil:
		b.mu.Unlock()
		return b.fail(w, coap.BadRequest, "pubsub: topic-data in use")
	}
	t := &topic{id: newIDLocked(b.topics), creator: creator, subs: make(map[uint64]coap.Observer)}
	if seg == "" {
		seg = newIDLocked(b.byData)
		td := b.dataPath(seg)
		p.TopicData = &td
	}
	t.dataSeg, t.props = seg, p
	if p.Initialize != nil {
		// §3.2.1: as if a first publication had happened.
		t.full, t.hasCF, t.cf = true, true, *p.TopicContentFormat
		t.payload = append([]byte{}, p.Initialize...)
	}
	// Reserve the names, and hold op so that nobody uses the topic before
	// it is on disk. Taking op under Broker.mu is safe only here: nobody
	// else can know t yet.
	t.op.Lock()
	defer t.op.Unlock()
	b.topics[t.id], b.byName[*p.TopicName], b.byData[seg] = t, t, t
	b.created[creator]++
	err = b.persistUnlock(t, &t.props, t.full, t.hasCF, t.cf, t.payload, t.seq)
	b.mu.Lock()
	if err != nil {
		t.gone = true
		delete(b.topics, t.id)
		delete(b.byName, *p.TopicName)
		delete(b.byData, seg)
		b.uncreateLocked(t)
		b.mu.Unlock()
		b.warn("pubsub: cannot store topic", "err", err)
		return b.fail(w, coap.InternalServerError, stored("pubsub: cannot store topic", err))
	}
	if p.ExpirationDate != nil {
		b.rearmLocked()
	}
	rep, err := t.props.Encode()
	b.mu.Unlock()
	if err != nil {
		return b.fail(w, coap.InternalServerError, "")
	}
	resp := &coap.Message{Code: coap.Created, Payload: rep}
	for _, s := range b.segs {
		resp.Options = resp.Options.Insert(coap.LocationPath, []byte(s))
	}
	resp.Options = resp.Options.Insert(coap.LocationPath, []byte(t.id))
	resp.Options = resp.Options.SetUint(coap.ContentFormat, uint32(b.cfg.ContentFormat))
	return w.WriteResponse(resp)
}

// --- topic resource (draft §2.5) ---

func (b *Broker) topicResource(w coap.ResponseWriter, r *coap.Request, t *topic) error {
	m := r.Msg
	switch m.Code {
	case coap.GET, coap.FETCH:
		if !accepts(m, b.cfg.ContentFormat) {
			return b.fail(w, coap.NotAcceptable, "")
		}
		var keys []int64 // nil: all of them (§2.5.1)
		if m.Code == coap.FETCH {
			// §2.5.2: an application/cbor array of keys.
			if cf, ok := contentFormat(m); !ok || cf != cfCBOR {
				return b.fail(w, coap.UnsupportedContentFormat, "")
			}
			var err error
			if keys, err = DecodeKeyList(m.Payload); err != nil {
				return b.fail(w, coap.BadRequest, err.Error())
			}
		}
		b.mu.Lock()
		if !b.liveLocked(t, b.clock.Now()) {
			b.mu.Unlock()
			return b.fail(w, coap.NotFound, "")
		}
		rep, err := t.props.encodeKeys(keys)
		b.mu.Unlock()
		if err != nil {
			return b.fail(w, coap.InternalServerError, "")
		}
		return b.configResponse(w, coap.Content, rep)
	case coap.POST, coap.IPATCH:
		return b.update(w, r, t)
	case coap.DELETE:
		// §2.5.5.
		if err := b.deleteTopic(t, false); err != nil {
			if err == errGone {
				return b.fail(w, coap.NotFound, "")
			}
			b.warn("pubsub: cannot delete topic", "topic", t.id, "err", err)
			return b.fail(w, coap.InternalServerError, stored("pubsub: cannot delete topic", err))
		}
		return w.WriteResponse(&coap.Message{Code: coap.Deleted})
	}
	return b.fail(w, coap.MethodNotAllowed, "")
}

func (b *Broker) configResponse(w coap.ResponseWriter, code coap.Code, rep []byte) error {
	resp := &coap.Message{Code: code, Payload: rep}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, uint32(b.cfg.ContentFormat))
	return w.WriteResponse(resp)
}

// update replaces (POST, §2.5.3) or patches (iPATCH, §2.5.4) a topic's
// configuration. topic-name, topic-data and resource-type cannot change.
func (b *Broker) update(w coap.ResponseWriter, r *coap.Request, t *topic) error {
	m := r.Msg
	if !b.isOurs(m) {
		return b.fail(w, coap.UnsupportedContentFormat, "")
	}
	req, err := DecodeProperties(m.Payload)
	if err != nil {
		return b.fail(w, coap.BadRequest, err.Error())
	}
	t.op.Lock()
	defer t.op.Unlock()
	now := b.clock.Now()
	b.mu.Lock()
	if !b.liveLocked(t, now) {
		b.mu.Unlock()
		return b.fail(w, coap.NotFound, "")
	}
	cur := t.props.clone()
	b.mu.Unlock()
	same := func(a, b *string) bool { return a == nil || *a == *b }
	if !same(req.TopicName, cur.TopicName) || !same(req.TopicData, cur.TopicData) || !same(req.ResourceType, cur.ResourceType) {
		return b.fail(w, coap.BadRequest, "pubsub: topic-name, topic-data and resource-type are immutable")
	}
	// Only topic-type can be new; the others are the stored ones, which
	// an older configuration may have let be longer.
	if code, diag := b.checkNames(&Properties{TopicType: req.TopicType}, ""); code != 0 {
		return b.fail(w, code, diag)
	}
	var next Properties
	if m.Code == coap.POST {
		// A full replacement: what is left out gets its default.
		next = req
		next.TopicName, next.TopicData, next.ResourceType = cur.TopicName, cur.TopicData, cur.ResourceType
	} else {
		next = cur
		if req.TopicContentFormat != nil {
			next.TopicContentFormat = req.TopicContentFormat
		}
		if req.TopicType != nil {
			next.TopicType = req.TopicType
		}
		if req.ExpirationDate != nil {
			next.ExpirationDate = req.ExpirationDate
		}
		if req.MaxSubscribers != nil {
			next.MaxSubscribers = req.MaxSubscribers
		}
		if req.ObserverCheck != nil {
			next.ObserverCheck = req.ObserverCheck
		}
		if req.Initialize != nil {
			next.Initialize = req.Initialize
		}
	}
	if code, diag := b.checkNew(&next, now); code != 0 {
		return b.fail(w, code, diag)
	}

	b.mu.Lock()
	if err := b.persistUnlock(t, &next, t.full, t.hasCF, t.cf, t.payload, t.seq); err != nil {
		b.warn("pubsub: cannot store topic", "topic", t.id, "err", err)
		return b.fail(w, coap.InternalServerError, stored("pubsub: cannot store topic", err))
	}
	b.mu.Lock()
	t.props = next
	// §2.5.3: a lower max-subscribers ends the newest subscriptions with
	// a final 4.04.
	var evicted []coap.Observer
	if ms := next.MaxSubscribers; ms != nil && uint64(len(t.subs)) > *ms {
		ids := make([]uint64, 0, len(t.subs))
		for id := range t.subs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids[*ms:] {
			evicted = append(evicted, t.subs[id])
			delete(t.subs, id)
		}
	}
	b.rearmLocked()
	rep, err := next.Encode()
	b.mu.Unlock()
	b.notifyAll(evicted, &coap.Message{Code: coap.NotFound})
	if err != nil {
		return b.fail(w, coap.InternalServerError, "")
	}
	return b.configResponse(w, coap.Changed, rep)
}

// deleteTopic removes a topic and its topic-data resource; subscribers
// get a final 4.04 (draft §2.5.5, RFC 7641 §3.2).
func (b *Broker) deleteTopic(t *topic, expiring bool) error {
	t.op.Lock()
	defer t.op.Unlock()
	b.mu.Lock()
	gone := t.gone || (!expiring && !b.liveLocked(t, b.clock.Now()))
	b.mu.Unlock()
	if gone {
		return errGone
	}
	if err := b.st.Remove(t.id); err != nil {
		return err
	}
	b.mu.Lock()
	t.gone = true
	delete(b.topics, t.id)
	delete(b.byName, *t.props.TopicName)
	delete(b.byData, t.dataSeg)
	b.uncreateLocked(t)
	subs := takeSubs(t)
	if t.props.ExpirationDate != nil {
		b.rearmLocked()
	}
	b.mu.Unlock()
	b.notifyAll(subs, &coap.Message{Code: coap.NotFound})
	return nil
}

// uncreateLocked gives back the quota t's creator used.
func (b *Broker) uncreateLocked(t *topic) {
	if t.creator == "" {
		return
	}
	if b.created[t.creator]--; b.created[t.creator] <= 0 {
		delete(b.created, t.creator)
	}
}

// takeSubs empties t's subscription list; the caller holds Broker.mu.
func takeSubs(t *topic) []coap.Observer {
	if len(t.subs) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(t.subs))
	for id := range t.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]coap.Observer, len(ids))
	for i, id := range ids {
		out[i] = t.subs[id]
	}
	clear(t.subs)
	return out
}

// notifyAll hands n to every subscription. Observer.Notify never blocks;
// it is called with t.op held, never Broker.mu.
func (b *Broker) notifyAll(subs []coap.Observer, n *coap.Message) {
	for _, u := range subs {
		u.Notify(n)
		b.informed.Add(1)
	}
}

// --- topic-data resource (draft §3.2, §3.3) ---

func (b *Broker) topicData(ctx context.Context, w coap.ResponseWriter, r *coap.Request, t *topic) error {
	switch r.Msg.Code {
	case coap.PUT:
		return b.publish(w, r, t)
	case coap.GET:
		return b.read(ctx, w, r, t)
	case coap.DELETE:
		return b.deleteData(w, t)
	}
	return b.fail(w, coap.MethodNotAllowed, "")
}

// maxAgeLocked is the Max-Age of t's representation: the configured one,
// cut short by the topic's expiration.
func (b *Broker) maxAgeLocked(t *topic, now time.Time) uint32 {
	age := b.cfg.MaxAge.Duration
	if exp, ok := expiry(&t.props); ok && exp.Sub(now) < age {
		age = max(exp.Sub(now), 0)
	}
	return uint32(age / time.Second)
}

// representationLocked is t's current data as a 2.05, without Observe.
func (b *Broker) representationLocked(t *topic, now time.Time) *coap.Message {
	resp := &coap.Message{Code: coap.Content, Payload: t.payload}
	if t.hasCF {
		resp.Options = resp.Options.SetUint(coap.ContentFormat, uint32(t.cf))
	}
	resp.Options = resp.Options.SetUint(coap.MaxAge, b.maxAgeLocked(t, now))
	return resp
}

// publish stores a publication and notifies the subscriptions (§3.2.1).
// The payload is never parsed: a COSE object passes byte for byte.
func (b *Broker) publish(w coap.ResponseWriter, r *coap.Request, t *topic) error {
	m := r.Msg
	if len(m.Payload) > b.cfg.MaxPayload {
		b.rejected.Add(1)
		resp := &coap.Message{Code: coap.RequestEntityTooLarge}
		resp.Options = resp.Options.SetUint(coap.Size1, uint32(b.cfg.MaxPayload))
		return w.WriteResponse(resp)
	}
	cf, hasCF := contentFormat(m)
	if m.Options.Has(coap.ContentFormat) && !hasCF {
		return b.fail(w, coap.BadRequest, "pubsub: bad Content-Format")
	}
	t.op.Lock()
	defer t.op.Unlock()
	now := b.clock.Now()
	b.mu.Lock()
	if !b.liveLocked(t, now) {
		b.mu.Unlock()
		return b.fail(w, coap.NotFound, "")
	}
	if want := t.props.TopicContentFormat; want != nil && (!hasCF || cf != *want) {
		b.mu.Unlock()
		return b.fail(w, coap.UnsupportedContentFormat, "")
	}
	if iv := b.cfg.MinPublishInterval.Duration; iv > 0 && !t.lastPub.IsZero() {
		if wait := t.lastPub.Add(iv).Sub(now); wait > 0 {
			b.mu.Unlock()
			// §3.4, RFC 8516: Max-Age says when the publisher may retry.
			b.rejected.Add(1)
			resp := &coap.Message{Code: coap.TooManyRequests}
			resp.Options = resp.Options.SetUint(coap.MaxAge, uint32(math.Ceil(wait.Seconds())))
			return w.WriteResponse(resp)
		}
	}
	first := !t.full
	seq := (t.seq + 1) & 0xffffff
	payload := append([]byte{}, m.Payload...) // the request's buffer is reused
	// Durable before acknowledged: a 2.01/2.04 survives a crash.
	if err := b.persistUnlock(t, &t.props, true, hasCF, cf, payload, seq); err != nil {
		b.warn("pubsub: cannot store publication", "topic", t.id, "err", err)
		return b.fail(w, coap.InternalServerError, stored("pubsub: cannot store publication", err))
	}
	b.mu.Lock()
	t.full, t.hasCF, t.cf, t.payload, t.seq, t.lastPub = true, hasCF, cf, payload, seq, now
	var subs []coap.Observer
	var n *coap.Message
	if len(t.subs) > 0 {
		subs = make([]coap.Observer, 0, len(t.subs))
		for _, u := range t.subs {
			subs = append(subs, u)
		}
		n = b.representationLocked(t, now)
		n.Options = n.Options.SetUint(coap.Observe, seq)
	}
	b.mu.Unlock()
	b.publications.Add(1)
	b.notifyAll(subs, n)
	code := coap.Changed
	if first {
		code = coap.Created // §3.2.1: HALF CREATED → FULLY CREATED
	}
	return w.WriteResponse(&coap.Message{Code: code})
}

// read answers a GET on topic-data (§3.3) and, with Observe=0 and a hub
// that asked for an upstream observation, subscribes (§3.2.2).
func (b *Broker) read(ctx context.Context, w coap.ResponseWriter, r *coap.Request, t *topic) error {
	m := r.Msg
	obs, hasObs := m.Options.Uint(coap.Observe)
	u := r.Observer
	wantSub := hasObs && obs == 0 && u != nil
	now := b.clock.Now()
	b.mu.Lock()
	if !b.liveLocked(t, now) || !t.full {
		// §3.2.2, §3.3: HALF CREATED has no topic-data resource.
		b.mu.Unlock()
		return b.fail(w, coap.NotFound, "")
	}
	if v, ok := m.Options.Get(coap.Accept); ok && (len(v) > 2 || !t.hasCF || uint16(coap.DecodeUint(v)) != t.cf) {
		b.mu.Unlock()
		return b.fail(w, coap.NotAcceptable, "")
	}
	resp := b.representationLocked(t, now)
	var id uint64
	subscribed := false
	if wantSub && (t.props.MaxSubscribers == nil || uint64(len(t.subs)) < *t.props.MaxSubscribers) {
		// Over max-subscribers the 2.05 goes without Observe: RFC 7641
		// §4.1, draft §3.2.2.
		b.nextSub++
		id = b.nextSub
		t.subs[id] = u
		resp.Options = resp.Options.SetUint(coap.Observe, t.seq)
		subscribed = true
	}
	b.mu.Unlock()
	if subscribed {
		u.Started(func(context.Context) error {
			b.mu.Lock()
			delete(t.subs, id)
			b.mu.Unlock()
			return nil
		})
	}
	return w.WriteResponse(resp)
}

// deleteData removes the topic-data resource: the topic goes back to HALF
// CREATED and the subscribers get a final 4.04 (§3.2.4).
func (b *Broker) deleteData(w coap.ResponseWriter, t *topic) error {
	t.op.Lock()
	defer t.op.Unlock()
	b.mu.Lock()
	if !b.liveLocked(t, b.clock.Now()) || !t.full {
		b.mu.Unlock()
		return b.fail(w, coap.NotFound, "")
	}
	if err := b.persistUnlock(t, &t.props, false, false, 0, nil, t.seq); err != nil {
		b.warn("pubsub: cannot store topic", "topic", t.id, "err", err)
		return b.fail(w, coap.InternalServerError, stored("pubsub: cannot store topic", err))
	}
	b.mu.Lock()
	t.full, t.hasCF, t.cf, t.payload = false, false, 0, nil
	subs := takeSubs(t)
	b.mu.Unlock()
	b.notifyAll(subs, &coap.Message{Code: coap.NotFound})
	return w.WriteResponse(&coap.Message{Code: coap.Deleted})
}
