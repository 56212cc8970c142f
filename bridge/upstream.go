package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
)

// Upstream sends a forwarded request to its target and returns the
// response: one per transport kind (IP, radio, plugin).
type Upstream interface {
	RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error)
	// Observe registers an observation (RFC 7641 §3.1): it returns the
	// first response and, when the origin registered it, the function
	// that cancels it. Notifications go to notify, which must not block.
	Observe(ctx context.Context, target netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error)
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

func (u *ipUpstream) Observe(ctx context.Context, target netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	resp, obs, err := u.e.Observe(ctx, target, req, notify)
	if err != nil || obs == nil {
		return resp, nil, err
	}
	return resp, obs.Cancel, nil
}

func (u *ipUpstream) Close() error { return u.e.Close() }

// radioUpstream reaches nodes behind one radio: CoAP over UDP over 6LoWPAN
// through the message layer, with the radio's own retransmission timers.
type radioUpstream struct {
	r *radio.Radio
	e *coap.Endpoint
}

var _ Upstream = (*radioUpstream)(nil)

// retryHint is the Max-Age of a 5.03 while a radio is down: about how long
// a reconnect takes.
const retryHint = 5

func (u *radioUpstream) down() error {
	return &coap.Error{Code: coap.ServiceUnavailable, Diagnostic: "radio " + u.r.Name() + " down", MaxAge: retryHint}
}

func (u *radioUpstream) RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	if !u.r.Up() {
		return nil, u.down()
	}
	resp, err := u.e.Do(ctx, target, req)
	if errors.Is(err, radio.ErrDown) {
		return nil, u.down()
	}
	return resp, err
}

func (u *radioUpstream) Observe(ctx context.Context, target netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	if !u.r.Up() {
		return nil, nil, u.down()
	}
	resp, obs, err := u.e.Observe(ctx, target, req, notify)
	if err != nil || obs == nil {
		return resp, nil, err
	}
	return resp, obs.Cancel, nil
}

func (u *radioUpstream) Close() error {
	err := u.e.Close()
	return errors.Join(err, u.r.Close())
}

// pluginUpstream hands a request to the plugin that translates its scheme
// (plugins/http for http and https, ...). The plugin gets the target URI;
// the payload stays opaque.
type pluginUpstream struct {
	t   *plugins.Translator
	uri string
}

var _ Upstream = (*pluginUpstream)(nil)

func (u *pluginUpstream) RoundTrip(ctx context.Context, _ netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	resp, err := u.t.RoundTrip(ctx, u.uri, req)
	if errors.Is(err, plugins.ErrPlugin) {
		return nil, &coap.Error{Code: coap.BadGateway, MaxAge: -1, Err: err}
	}
	return resp, err
}

func (u *pluginUpstream) Observe(ctx context.Context, _ netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	return u.t.Observe(ctx, u.uri, req, notify)
}
