package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/opaque-edge/gatewayd/coap"
)

// Upstream sends a forwarded request to its target and returns the
// response: one per transport kind (IP, radio, plugin).
type Upstream interface {
	RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error)
}

// ipUpstream reaches CoAP servers over UDP through one socket and the
// message layer: many exchanges in flight, matched by token.
type ipUpstream struct {
	e *coap.Endpoint
}

var _ Upstream = (*ipUpstream)(nil)

func newIPUpstream(ctx context.Context, log *slog.Logger) (*ipUpstream, error) {
	u, err := coap.ListenUDP(ctx, ":0")
	if err != nil {
		return nil, fmt.Errorf("bridge: upstream socket: %w", err)
	}
	return &ipUpstream{e: coap.NewEndpoint(u, coap.EndpointConfig{Logger: log})}, nil
}

func (u *ipUpstream) RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	return u.e.Do(ctx, target, req)
}

func (u *ipUpstream) Close() error { return u.e.Close() }
