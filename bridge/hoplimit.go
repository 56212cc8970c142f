package bridge

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/opaque-edge/gatewayd/coap"
)

// newHopLimit enforces RFC 8768 §3 on requests that will be forwarded:
// insert the configured value when absent, reject 0 (and values over 255
// or repeated options) with 4.00, decrement, and answer 5.08 when nothing
// is left. The 5.08 carries this proxy's name as diagnostic (§4).
func newHopLimit(cfg ProxyConfig, log *slog.Logger, forwards func(*coap.Message) bool) stage {
	return func(next coap.Handler) coap.Handler {
		return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			m := r.Msg
			if !forwards(m) {
				return next.ServeCoAP(ctx, w, r)
			}
			v := uint32(cfg.HopLimit)
			n := 0
			for _, o := range m.Options {
				if o.ID != coap.HopLimit {
					continue
				}
				n++
				if len(o.Value) != 1 || o.Value[0] == 0 {
					return coap.Errorf(coap.BadRequest, "bad Hop-Limit")
				}
				v = uint32(o.Value[0])
			}
			if n > 1 {
				// §3 refers to RFC 7252 §5.4.5: a repeated non-repeatable
				// elective option is treated as unrecognized; the proxy
				// cannot tell which value is right, so it refuses.
				return coap.Errorf(coap.BadRequest, "repeated Hop-Limit")
			}
			v--
			if v == 0 {
				log.Warn("hop limit reached: a forwarding loop?", "peer", r.Peer)
				return &coap.Error{Code: coap.HopLimitReached, Diagnostic: cfg.Name, MaxAge: -1}
			}
			m.Options = m.Options.Set(coap.HopLimit, hopValues[v:v+1:v+1])
			return next.ServeCoAP(ctx, w, r)
		})
	}
}

// hopValues holds every Hop-Limit value, so that setting one takes no
// allocation: the option's value is the slice [v:v+1]. Never written.
var hopValues = func() (b [256]byte) {
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// relay58 prepares a 5.08 from upstream for the client (RFC 8768 §4): the
// proxy prepends its identifier, and refuses to pass on one that already
// names it.
func relay58(resp *coap.Message, name string) (*coap.Message, bool) {
	for _, id := range bytes.Fields(resp.Payload) {
		if string(id) == name {
			return nil, false
		}
	}
	out := *resp
	if len(resp.Payload) == 0 {
		out.Payload = []byte(name)
	} else {
		out.Payload = append([]byte(name+" "), resp.Payload...)
	}
	return &out, true
}

// isForward reports a request for some other server: Proxy-Uri or
// Proxy-Scheme (§5.7.2).
func isForward(m *coap.Message) bool {
	return m.Options.Has(coap.ProxyURI) || m.Options.Has(coap.ProxyScheme)
}
