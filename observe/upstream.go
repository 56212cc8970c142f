package observe

import (
	"context"

	"github.com/opaque-edge/gatewayd/coap"
)

// Upstream is what the hub hands to the stages after it when it needs an
// observation of the origin: the proxy's route stage finds it in the
// request's context, registers the observation with the origin (RFC 7641
// §3.1) and reports to it, instead of making a one-shot exchange.
type Upstream interface {
	// Notify receives every notification after the first response. It
	// runs on a transport's reader goroutine and must not block.
	Notify(n *coap.Message)
	// Started hands over the function that cancels the upstream
	// observation; it is called before the first response is written.
	Started(cancel func(ctx context.Context) error)
}

type upstreamKey struct{}

// WithUpstream asks the stages after the hub to observe the origin for u.
func WithUpstream(ctx context.Context, u Upstream) context.Context {
	return context.WithValue(ctx, upstreamKey{}, u)
}

// UpstreamFrom returns the Upstream a request carries, if any.
func UpstreamFrom(ctx context.Context) (Upstream, bool) {
	u, ok := ctx.Value(upstreamKey{}).(Upstream)
	return u, ok
}
