package rd

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/opaque-edge/gatewayd/acl"
	"github.com/opaque-edge/gatewayd/coap"
)

// cfLinkFormat is application/link-format (RFC 6690 §7.2), the format
// every RD must support (RFC 9176 §4.2).
const cfLinkFormat = 40

// The directory's resources, relative to the gateway's root.
const (
	pathRD     = "rd"        // registration (core.rd); registration resources are rd/<id>
	pathLookup = "rd-lookup" // rd-lookup/ep (core.rd-lookup-ep) and rd-lookup/res (core.rd-lookup-res)
)

// resource is what a request's path names.
type resource int

const (
	resNone       resource = iota // not the directory's
	resOther                      // under the directory's paths, nothing there: 4.04
	resRegister                   // /rd
	resRegistered                 // /rd/<id>
	resLookupEP                   // /rd-lookup/ep
	resLookupRes                  // /rd-lookup/res
	resSimple                     // /.well-known/rd
)

// match tells the directory's resource a request is for: a request for
// this gateway (no Proxy-Uri, no Proxy-Scheme) whose path is one of the
// directory's. id is the registration a /rd/<id> names.
func match(m *coap.Message) (res resource, id string) {
	if m == nil || !m.Code.IsRequest() || m.Options.Has(coap.ProxyURI) || m.Options.Has(coap.ProxyScheme) {
		return resNone, ""
	}
	var seg [3]string
	n := 0
	for v := range m.Options.All(coap.URIPath) {
		if n < len(seg) {
			seg[n] = string(v)
		}
		n++
	}
	switch {
	case n == 0:
		return resNone, ""
	case seg[0] == pathRD && n == 1:
		return resRegister, ""
	case seg[0] == pathRD && n == 2:
		return resRegistered, seg[1]
	case seg[0] == pathLookup && n == 2 && seg[1] == "ep":
		return resLookupEP, ""
	case seg[0] == pathLookup && n == 2 && seg[1] == "res":
		return resLookupRes, ""
	case seg[0] == pathRD || seg[0] == pathLookup:
		return resOther, ""
	case n == 2 && seg[0] == ".well-known" && seg[1] == "rd":
		return resSimple, ""
	}
	return resNone, ""
}

// Owns reports whether a request is for the directory's resources; the
// proxy's local stage passes such requests on instead of answering 4.04.
func (d *Directory) Owns(m *coap.Message) bool {
	res, _ := match(m)
	return res != resNone
}

// Reserved are the first path segments the directory serves itself,
// which no endpoint may take as a route name.
func Reserved() []string { return []string{pathRD, pathLookup, ".well-known"} }

// Stage returns the directory's link in the chain, after the Observe hub
// so that lookups are observable: requests for its resources are its,
// everything else goes to next.
func (d *Directory) Stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		res, id := match(r.Msg)
		if res == resNone {
			return next.ServeCoAP(ctx, w, r)
		}
		return d.serve(ctx, w, r, res, id)
	})
}

// Gate is the directory's access lists as a stage of their own, for the
// chain to put before the Observe hub, which lets a client join an
// observed lookup without asking the directory. A refused request gets
// 4.03; anything else goes to next. Stage applies the same lists again.
func (d *Directory) Gate(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if res, _ := match(r.Msg); res != resNone {
			if diag := d.deny(r, res); diag != "" {
				return d.fail(w, coap.Forbidden, diag)
			}
		}
		return next.ServeCoAP(ctx, w, r)
	})
}

// deny applies the access lists: "" when the client may go on, else the
// 4.03's diagnostic. Registering, updating and removing is for
// registrants; lookups for lookups, everyone when that list is empty.
// RFC 9176 §8.3: access to registration and to lookup are controlled
// apart.
func (d *Directory) deny(r *coap.Request, res resource) string {
	var list *acl.List
	var what string
	switch res {
	case resRegister, resRegistered, resSimple:
		if r.Msg.Code == coap.GET {
			return "" // 4.05, whoever asks
		}
		list, what = &d.registrants, "registrants may register"
	case resLookupEP, resLookupRes:
		list, what = d.lookups, "lookups may look up"
	}
	if list == nil {
		return ""
	}
	c := d.clientOf(r)
	if list.Allows(c) {
		return ""
	}
	d.warn("rd: request refused by the access lists", "client", c.String(), "code", r.Msg.Code.String())
	return "rd: only " + what + " (" + c.String() + " is not listed)"
}

// fail answers a request the directory refuses.
func (d *Directory) fail(w coap.ResponseWriter, code coap.Code, diag string) error {
	d.rejected.Add(1)
	m := &coap.Message{Code: code}
	if diag != "" {
		m.Payload = []byte(diag)
	}
	return w.WriteResponse(m)
}

// failAge is fail with a Max-Age: when to try again.
func (d *Directory) failAge(w coap.ResponseWriter, code coap.Code, age time.Duration, diag string) error {
	d.rejected.Add(1)
	m := &coap.Message{Code: code, Payload: []byte(diag)}
	m.Options = m.Options.SetUint(coap.MaxAge, uint32(min(max(age.Round(time.Second), time.Second), time.Hour)/time.Second))
	return w.WriteResponse(m)
}

// supported lists the critical options the directory understands; a
// request with another gets 4.02 (RFC 7252 §5.4.1): OSCORE (the gateway
// holds no keys), If-Match, If-None-Match, Block1 among them.
var supported = []coap.OptionID{coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.Accept}

func (d *Directory) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request, res resource, id string) error {
	if opt, bad := r.Msg.Options.UnrecognizedCritical(supported...); bad {
		return d.fail(w, coap.BadOption, "rd: unsupported critical option "+opt.String())
	}
	if diag := d.deny(r, res); diag != "" {
		return d.fail(w, coap.Forbidden, diag)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return d.fail(w, coap.ServiceUnavailable, "rd: closed")
	}
	code := r.Msg.Code
	switch res {
	case resRegister:
		if code != coap.POST {
			return d.fail(w, coap.MethodNotAllowed, "")
		}
		return d.register(w, r)
	case resRegistered:
		switch code {
		case coap.POST:
			return d.update(w, r, id)
		case coap.DELETE:
			return d.remove(w, r, id)
		}
		// RFC 9176 §5.3.3: reading a registration is left to future
		// documents.
		return d.fail(w, coap.MethodNotAllowed, "")
	case resSimple:
		if code != coap.POST {
			return d.fail(w, coap.MethodNotAllowed, "")
		}
		return d.simple(ctx, w, r)
	case resLookupEP, resLookupRes:
		if code != coap.GET {
			return d.fail(w, coap.MethodNotAllowed, "")
		}
		return d.lookup(ctx, w, r, res)
	}
	return d.fail(w, coap.NotFound, "")
}

// --- parameters (RFC 9176 §5, §5.3.1) ---

// maxExtra bounds the further endpoint attributes of a registration.
const maxExtra = 16

// --- registration (RFC 9176 §5) ---

func (d *Directory) register(w coap.ResponseWriter, r *coap.Request) error {
	m := r.Msg
	p, diag := d.parseParams(m)
	if diag != "" {
		return d.fail(w, coap.BadRequest, diag)
	}
	if !p.hasEP {
		// No configured names to assign (§5): the name is required.
		return d.fail(w, coap.BadRequest, "rd: ep is required")
	}
	if v, ok := m.Options.Get(coap.ContentFormat); ok && coap.DecodeUint(v) != cfLinkFormat {
		return d.fail(w, coap.UnsupportedContentFormat, "rd: links must be application/link-format (40)")
	}
	if len(m.Payload) > d.cfg.MaxBytes {
		return d.tooLarge(w, len(m.Payload))
	}
	doc := string(m.Payload) // a copy: the request's buffer is reused
	links, diag := d.parseDoc(doc)
	if diag != "" {
		return d.fail(w, coap.BadRequest, diag)
	}
	reg := &registration{ep: p.ep, d: p.d, base: p.base, from: r.Peer, secure: r.Secure, lt: d.lifetime(p),
		proxy: p.proxy, attrs: p.extra, doc: doc, links: links}
	if n := reg.size(); n > d.cfg.MaxBytes {
		return d.tooLarge(w, n)
	}
	id, code, diag, age := d.commit(d.clientOf(r), reg)
	switch {
	case code == coap.ServiceUnavailable:
		return d.failAge(w, code, age, diag)
	case code != 0:
		return d.fail(w, code, diag)
	}
	// The same code and location for a new registration and for one of
	// an (ep, d) already registered (§5).
	resp := &coap.Message{Code: coap.Created}
	resp.Options = resp.Options.Insert(coap.LocationPath, []byte(pathRD)).Insert(coap.LocationPath, []byte(id))
	return w.WriteResponse(resp)
}

func (d *Directory) tooLarge(w coap.ResponseWriter, n int) error {
	d.rejected.Add(1)
	resp := &coap.Message{Code: coap.RequestEntityTooLarge, Payload: fmt.Appendf(nil, "rd: %d bytes, over max_bytes %d", n, d.cfg.MaxBytes)}
	resp.Options = resp.Options.SetUint(coap.Size1, uint32(d.cfg.MaxBytes))
	return w.WriteResponse(resp)
}

// commit stores reg for client c: a new registration, or the one of the
// same (ep, d), which it replaces (§5: content and parameters). It
// returns the registration's id, or the code and diagnostic of a
// refusal (with a Max-Age for 5.03). A name held by another client is
// refused, never taken over (§7.5, §8.2).
func (d *Directory) commit(c acl.Client, reg *registration) (id string, code coap.Code, diag string, age time.Duration) {
	owner := ownerOf(c)
	if owner == "" {
		return "", coap.Forbidden, "rd: the registrant cannot be told apart from others", 0
	}
	reg.owner = owner
	if n := reg.size(); n > d.cfg.MaxBytes {
		return "", coap.RequestEntityTooLarge, fmt.Sprintf("rd: %d bytes, over max_bytes %d", n, d.cfg.MaxBytes), 0
	}
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	now := d.clock.Now()
	old := d.byName[nameKey(reg.ep)]
	if old != nil && !old.expires.After(now) {
		old = nil // its expiry is due; the name is free
	}
	if code, diag := d.conflictLocked(old, reg, owner); code != 0 {
		d.mu.Unlock()
		return "", code, diag, 0
	}
	if code, diag := d.overQuotaLocked(old, reg, owner); code != 0 {
		d.mu.Unlock()
		return "", code, diag, 0
	}
	if old == nil && len(d.regs) >= d.cfg.MaxRegistrations {
		age := d.nextExpiryLocked(now)
		d.mu.Unlock()
		return "", coap.ServiceUnavailable, fmt.Sprintf("rd: %d registrations, max_registrations", len(d.regs)), age
	}
	if old != nil {
		reg.id = old.id
	} else {
		reg.id = d.newIDLocked()
	}
	d.mu.Unlock()
	if d.routed(reg.proxy) && d.isReserved(reg.ep) {
		return "", coap.Forbidden, fmt.Sprintf("rd: %q is a path of the gateway's own and cannot name a route", reg.ep), 0
	}
	reg.updated = now
	reg.expires = now.Add(time.Duration(reg.lt) * time.Second)
	if err := d.save(reg); err != nil {
		return "", coap.InternalServerError, "rd: cannot store the registration", 0
	}
	d.derive(reg)
	d.mu.Lock()
	if old != nil {
		d.dropLocked(old)
		d.refreshed.Add(1)
	} else {
		d.registered.Add(1)
	}
	// An expired one of the same name may still be in the table.
	if prev := d.byName[nameKey(reg.ep)]; prev != nil && prev != old {
		d.dropLocked(prev)
		d.expired.Add(1)
		if prev.id != reg.id {
			if err := d.st.Remove(prev.id); err != nil {
				d.warn("rd: cannot remove expired registration", "id", prev.id, "err", err)
			}
		}
	}
	d.addLocked(reg)
	d.changedLocked()
	d.mu.Unlock()
	if old == nil {
		d.log.Info("rd: registered", "ep", reg.ep, "d", reg.d, "base", reg.effBase, "location", "/rd/"+reg.id, "lt", reg.lt, "simple", reg.simple)
	}
	d.notifyChanged()
	return reg.id, 0, "", 0
}

// conflictLocked refuses a registration of a name another client holds,
// or that its holder holds in another sector or spelling: one name, one
// registration, one route.
func (d *Directory) conflictLocked(old, reg *registration, owner string) (coap.Code, string) {
	if old == nil {
		return 0, ""
	}
	if old.owner != owner {
		d.conflicts.Add(1)
		d.warn("rd: endpoint name held by another client", "ep", reg.ep, "holder", old.owner, "client", owner)
		return coap.Forbidden, fmt.Sprintf("rd: endpoint name %q is registered by another client", reg.ep)
	}
	if old.ep != reg.ep || old.d != reg.d {
		d.conflicts.Add(1)
		return coap.Forbidden, fmt.Sprintf("rd: endpoint name %q is registered as %q in sector %q; remove that first", reg.ep, old.ep, old.d)
	}
	return 0, ""
}

// overQuotaLocked refuses a new registration of a client that holds
// max_registrations_per_client already; one that replaces its own is no
// new one.
func (d *Directory) overQuotaLocked(old, reg *registration, owner string) (coap.Code, string) {
	q := d.quotaOf(owner)
	if old != nil || d.held[q] < d.cfg.MaxRegistrationsPerClient {
		return 0, ""
	}
	d.clientLimited.Add(1)
	d.warn("rd: client holds max_registrations_per_client", "client", q, "ep", reg.ep)
	// 4.03, not 5.03: it lasts until the client removes one or one
	// expires, and is the client's own doing (as the broker's
	// max_topics_per_client).
	return coap.Forbidden, fmt.Sprintf("rd: %s holds %d registrations (max_registrations_per_client); remove one first", q, d.cfg.MaxRegistrationsPerClient)
}

// isReserved reports a name the gateway routes or serves itself.
func (d *Directory) isReserved(ep string) bool {
	return slices.Contains(Reserved(), ep) || d.reserved(ep)
}

// nextExpiryLocked is how long until a registration expires and makes
// room: the Max-Age of a 5.03 for a full directory.
func (d *Directory) nextExpiryLocked(now time.Time) time.Duration {
	first := time.Duration(math.MaxInt64)
	for _, r := range d.regs {
		first = min(first, r.expires.Sub(now))
	}
	return first
}

// save writes reg to the state directory; it returns once the record is
// on stable storage.
func (d *Directory) save(reg *registration) error {
	b, err := encodeRecord(reg.record())
	if err == nil {
		err = d.st.Save(reg.id, b)
	}
	if err != nil {
		d.warn("rd: cannot store registration", "id", reg.id, "err", err)
	}
	return err
}

// --- registration resource: update and removal (RFC 9176 §5.3) ---

// owned returns the registration at id for client c: 4.04 when there is
// none (or it expired), 4.03 when another client made it (§5.3: only the
// registering endpoint operates on it).
func (d *Directory) owned(c acl.Client, id string) (*registration, coap.Code, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	reg := d.regs[id]
	if reg == nil || !reg.expires.After(d.clock.Now()) {
		return nil, coap.NotFound, ""
	}
	if reg.owner != ownerOf(c) {
		return nil, coap.Forbidden, "rd: the registration is another client's"
	}
	return reg, 0, ""
}

func (d *Directory) update(w coap.ResponseWriter, r *coap.Request, id string) error {
	m := r.Msg
	if len(m.Payload) > 0 {
		// §5.3.1 describes updates with an empty payload only.
		return d.fail(w, coap.BadRequest, "rd: an update has no payload; register again to change the links")
	}
	p, diag := d.parseParams(m)
	if diag != "" {
		return d.fail(w, coap.BadRequest, diag)
	}
	c := d.clientOf(r)
	d.op.Lock()
	defer d.op.Unlock()
	old, code, diag := d.owned(c, id)
	if code != 0 {
		return d.fail(w, code, diag)
	}
	if p.hasEP && p.ep != old.ep || p.hasD && p.d != old.d {
		return d.fail(w, coap.BadRequest, "rd: an update cannot change ep or d")
	}
	reg := *old
	reg.attrs = slices.Clone(old.attrs)
	if p.hasLT {
		reg.lt = p.lt // else the last one set (§5.3.1)
	}
	switch {
	case p.hasBase:
		reg.base = p.base
	case old.base == "":
		// §5.3.1: no base given, none before: the source of this
		// request is the base from now on.
		reg.from, reg.secure = r.Peer, r.Secure
	}
	if p.proxy {
		reg.proxy = true
	}
	for _, a := range p.extra {
		if i := slices.IndexFunc(reg.attrs, func(x Param) bool { return x.Name == a.Name }); i >= 0 {
			reg.attrs[i] = a
		} else {
			reg.attrs = append(reg.attrs, a)
		}
	}
	if len(reg.attrs) > maxExtra {
		return d.fail(w, coap.BadRequest, fmt.Sprintf("rd: more than %d endpoint attributes", maxExtra))
	}
	if n := reg.size(); n > d.cfg.MaxBytes {
		return d.tooLarge(w, n)
	}
	if d.routed(reg.proxy) && d.isReserved(reg.ep) {
		return d.fail(w, coap.Forbidden, fmt.Sprintf("rd: %q is a path of the gateway's own and cannot name a route", reg.ep))
	}
	now := d.clock.Now()
	reg.updated = now
	// §5.3.1: an update restarts the lifetime, lt given or not.
	reg.expires = now.Add(time.Duration(reg.lt) * time.Second)
	if err := d.save(&reg); err != nil {
		return d.fail(w, coap.InternalServerError, "rd: cannot store the registration")
	}
	d.derive(&reg)
	d.mu.Lock()
	d.dropLocked(old)
	d.addLocked(&reg)
	d.changedLocked()
	d.mu.Unlock()
	d.refreshed.Add(1)
	d.notifyChanged()
	return w.WriteResponse(&coap.Message{Code: coap.Changed})
}

func (d *Directory) remove(w coap.ResponseWriter, r *coap.Request, id string) error {
	c := d.clientOf(r)
	d.op.Lock()
	defer d.op.Unlock()
	reg, code, diag := d.owned(c, id)
	if code != 0 {
		return d.fail(w, code, diag)
	}
	if err := d.st.Remove(reg.id); err != nil {
		d.warn("rd: cannot remove registration", "id", reg.id, "err", err)
		return d.fail(w, coap.InternalServerError, "rd: cannot remove the registration")
	}
	d.mu.Lock()
	d.dropLocked(reg)
	d.changedLocked()
	d.mu.Unlock()
	d.removed.Add(1)
	d.log.Info("rd: removed", "ep", reg.ep, "d", reg.d, "location", "/rd/"+reg.id)
	d.notifyChanged()
	return w.WriteResponse(&coap.Message{Code: coap.Deleted})
}

// --- simple registration (RFC 9176 §5.1) ---
