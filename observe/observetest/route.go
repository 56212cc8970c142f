// Package observetest holds what tests of the packages that use gatewayd's
// Observe hub share: the route stage the hub sits in front of, reduced to
// one origin.
package observetest

import (
	"context"
	"net/netip"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Route is a route stage for tests: it sends every request to origin
// through up, a Proxy-Uri turned into Uri-* options (RFC 7252 §6.4), and
// when the hub asks for an upstream observation (coap.Request.Observer) it
// observes the origin for it instead of making one exchange, as bridge's
// route does. A failed exchange is a 5.02.
func Route(up *coap.Endpoint, origin netip.AddrPort) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		out := *r.Msg
		out.Options = append(coap.Options(nil), r.Msg.Options...)
		if pu, ok := out.Options.Get(coap.ProxyURI); ok {
			u, err := coap.ParseURI(string(pu))
			if err != nil {
				return coap.Errorf(coap.BadRequest, "%v", err)
			}
			out.Options = u.SetOptions(out.Options.Remove(coap.ProxyURI), u.Port)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var resp *coap.Message
		var err error
		if u := r.Observer; u != nil {
			var obs *coap.Observation
			resp, obs, err = up.Observe(ctx, origin, &out, u.Notify)
			if obs != nil {
				u.Started(obs.Cancel)
			}
		} else {
			resp, err = up.Do(ctx, origin, &out)
		}
		if err != nil {
			return &coap.Error{Code: coap.BadGateway, MaxAge: -1, Err: err}
		}
		return w.WriteResponse(resp)
	})
}
