package bridge

import (
	"context"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

// newLocal answers requests for the proxy itself: no Proxy-Uri, no
// Proxy-Scheme, no reverse route. /.well-known/core lists what the gateway
// offers (RFC 6690 link format); anything else is 4.04. forwards tells the
// requests that go on to an origin; owned those another local resource
// (the broker) answers further down the chain.
func newLocal(cfg Config, forwards, owned func(*coap.Message) bool, more func() []string) stage {
	var links []string
	for _, r := range cfg.Route {
		links = append(links, `</`+r.Name+`>;title="route"`)
	}
	return func(next coap.Handler) coap.Handler {
		return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			if forwards(r.Msg) {
				return next.ServeCoAP(ctx, w, r)
			}
			if m := r.Msg; m.Code.IsSafe() && !m.Options.Has(coap.Observe) && !m.Options.Has(coap.OSCORE) {
				// Representations larger than a block go in blocks
				// (RFC 7959 §2.4); the resources answer whole. An
				// observation's notifications are not cut.
				var br blockRequest
				var err error
				if r, br, err = takeBlock2(r); err != nil {
					return err
				}
				// An unverified client's answer has a size limit
				// (amp.go): the block is cut to fit it.
				l, _ := coap.WrapperOf[*limitWriter](w)
				w = coap.WrapWriter(w, &blockWriter{br: br, limit: l})
			}
			// RFC 7252 §5.4.1: a critical option the resource does not
			// understand is 4.02 on every local resource, whatever the
			// path or method. OSCORE is one (RFC 8613 §8.2: the gateway
			// has no security context of its own).
			if id, bad := r.Msg.Options.UnrecognizedCritical(localOptions...); bad {
				return coap.Errorf(coap.BadOption, "unsupported critical option %v", id)
			}
			if owned(r.Msg) {
				return next.ServeCoAP(ctx, w, r)
			}
			if path(r.Msg) != ".well-known/core" {
				return coap.Errorf(coap.NotFound, "")
			}
			if r.Msg.Code != coap.GET {
				return coap.Errorf(coap.MethodNotAllowed, "")
			}
			// Broker topics change at run time; the query filter is RFC
			// 6690 §4.1 (the pub-sub draft's discovery relies on it).
			all := append(append([]string(nil), links...), more()...)
			var queries []string
			for q := range r.Msg.Options.All(coap.URIQuery) {
				queries = append(queries, string(q))
			}
			if len(queries) > 0 {
				all = pubsub.FilterLinks(all, queries)
			}
			resp := &coap.Message{Code: coap.Content, Payload: []byte(strings.Join(all, ","))}
			resp.Options = resp.Options.SetUint(coap.ContentFormat, 40) // application/link-format
			return w.WriteResponse(resp)
		})
	}
}

// localOptions are the critical options the gateway's own resources
// understand.
var localOptions = []coap.OptionID{coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery, coap.Accept}

// path joins the Uri-Path options.
func path(m *coap.Message) string {
	var b strings.Builder
	for v := range m.Options.All(coap.URIPath) {
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.Write(v)
	}
	return b.String()
}
