package rd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

func (d *Directory) simple(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	m := r.Msg
	if !d.cfg.Simple {
		return d.fail(w, coap.Forbidden, "rd: simple registration is off")
	}
	if len(m.Payload) > 0 {
		return d.fail(w, coap.BadRequest, "rd: simple registration has an empty payload (RFC 9176 §5.1)")
	}
	p, diag := d.parseParams(m)
	if diag != "" {
		return d.fail(w, coap.BadRequest, diag)
	}
	if p.hasBase {
		return d.fail(w, coap.BadRequest, "rd: simple registration takes no base (RFC 9176 §5.1)")
	}
	if !p.hasEP {
		return d.fail(w, coap.BadRequest, "rd: ep is required")
	}
	c := d.clientOf(r)
	owner := ownerOf(c)
	reg := &registration{ep: p.ep, d: p.d, from: r.Peer, secure: r.Secure, lt: d.lifetime(p), simple: true,
		proxy: p.proxy, attrs: p.extra}
	// Refuse a taken name before asking the node anything.
	now := d.clock.Now()
	d.mu.Lock()
	old := d.byName[nameKey(p.ep)]
	if old != nil && !old.expires.After(now) {
		old = nil
	}
	code, diag := d.conflictLocked(old, reg, owner)
	if code == 0 {
		// Nor is the node asked for a registration it would not get.
		code, diag = d.overQuotaLocked(old, reg, owner)
	}
	cached := old != nil && code == 0 && old.simple && old.from == r.Peer && now.Before(old.fresh)
	if cached {
		// §5.1: the RD SHOULD NOT fetch again while its copy is fresh.
		reg.doc, reg.links, reg.fresh = old.doc, old.links, old.fresh
	}
	d.mu.Unlock()
	if code != 0 {
		return d.fail(w, code, diag)
	}
	if !cached {
		doc, fresh, code, diag := d.fetchCore(ctx, r.Peer)
		if code != 0 {
			d.simpleFailures.Add(1)
			d.warn("rd: simple registration failed", "ep", p.ep, "from", r.Peer, "err", diag)
			if code == coap.ServiceUnavailable {
				return d.failAge(w, code, time.Second, diag)
			}
			return d.fail(w, code, diag)
		}
		links, diag := d.parseDoc(doc)
		if diag != "" {
			d.simpleFailures.Add(1)
			return d.fail(w, coap.BadRequest, "rd: the registrant's /.well-known/core: "+diag)
		}
		reg.doc, reg.links, reg.fresh = doc, links, now.Add(fresh)
	}
	_, code, diag, age := d.commit(c, reg)
	switch {
	case code == coap.ServiceUnavailable:
		return d.failAge(w, code, age, diag)
	case code != 0:
		return d.fail(w, code, diag)
	}
	return w.WriteResponse(&coap.Message{Code: coap.Changed})
}

// fetchCore GETs the registrant's /.well-known/core (§5.1), block by
// block up to max_bytes, within fetch_timeout. It returns the document
// and how long it is fresh (its Max-Age), or the code and diagnostic the
// registrant gets.
func (d *Directory) fetchCore(ctx context.Context, target netip.AddrPort) (string, time.Duration, coap.Code, string) {
	if d.fetch == nil {
		return "", 0, coap.ServiceUnavailable, "rd: simple registration cannot reach registrants here"
	}
	select {
	case d.fetching <- struct{}{}:
		defer func() { <-d.fetching }()
	default:
		return "", 0, coap.ServiceUnavailable, "rd: too many simple registrations at once"
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.FetchTimeout.Duration)
	defer cancel()
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core")).SetUint(coap.Accept, cfLinkFormat)
	bc := &blockwise.Client{MaxBody: d.cfg.MaxBytes, BlockSize: 1024, RoundTrip: func(ctx context.Context, m *coap.Message) (*coap.Message, error) {
		return d.fetch(ctx, target, m)
	}}
	resp, err := bc.Do(ctx, req)
	what := fmt.Sprintf("rd: GET /.well-known/core of %v", target)
	switch {
	case errors.Is(err, blockwise.ErrTooLarge):
		return "", 0, coap.RequestEntityTooLarge, fmt.Sprintf("%s: over max_bytes %d", what, d.cfg.MaxBytes)
	case ctx.Err() != nil || errors.Is(err, coap.ErrTimeout):
		return "", 0, coap.GatewayTimeout, what + ": no answer within fetch_timeout"
	case err != nil:
		return "", 0, coap.BadGateway, what + ": " + err.Error()
	case resp.Code != coap.Content:
		return "", 0, coap.BadGateway, fmt.Sprintf("%s: %v", what, resp.Code)
	}
	if len(resp.Payload) > d.cfg.MaxBytes {
		return "", 0, coap.RequestEntityTooLarge, fmt.Sprintf("%s: over max_bytes %d", what, d.cfg.MaxBytes)
	}
	if v, ok := resp.Options.Get(coap.ContentFormat); ok && coap.DecodeUint(v) != cfLinkFormat {
		return "", 0, coap.BadGateway, what + ": not application/link-format"
	}
	fresh := 60 * time.Second // RFC 7252 §5.10.5
	if v, ok := resp.Options.Uint(coap.MaxAge); ok {
		fresh = time.Duration(v) * time.Second
	}
	return string(resp.Payload), fresh, 0, ""
}
