package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"time"

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

// ipUpstream reaches CoAP servers over UDP through the message layer: many
// exchanges in flight, matched by token. IPv4 targets get a socket of
// their own, as sending IPv4 through a dual-stack socket costs more in the
// kernel; v6 is nil where the host has no IPv6.
type ipUpstream struct {
	v4, v6 *coap.Endpoint
	// ports are the sockets' local ports: a request that reaches the
	// proxy's own listeners from one of them is one it forwarded to
	// itself (fromSelf).
	ports []uint16
}

var _ Upstream = (*ipUpstream)(nil)

func newIPUpstream(ctx context.Context, log *slog.Logger) (*ipUpstream, error) {
	// One reader per core: the answers to inline requests are written by
	// the reader that got them (coap.Later). Two notifications of one
	// observation may then reach the hub in either order, as the network
	// may deliver them; the hub orders them (RFC 7641 §3.4, PR4.1).
	cfg := coap.EndpointConfig{Logger: log, Readers: runtime.GOMAXPROCS(0)}
	u4, err := coap.ListenUDPNetwork(ctx, "udp4", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("bridge: upstream socket: %w", err)
	}
	up := &ipUpstream{v4: coap.NewEndpoint(u4, cfg), ports: []uint16{u4.LocalAddr().Port()}}
	if u6, err := coap.ListenUDPNetwork(ctx, "udp6", "[::]:0"); err != nil {
		log.Info("no IPv6 upstream socket", "err", err)
	} else {
		up.v6 = coap.NewEndpoint(u6, cfg)
		up.ports = append(up.ports, u6.LocalAddr().Port())
	}
	return up, nil
}

// endpoint picks the endpoint for a target.
func (u *ipUpstream) endpoint(target netip.AddrPort) *coap.Endpoint {
	if target.Addr().Is4() || u.v6 == nil {
		return u.v4
	}
	return u.v6
}

func (u *ipUpstream) RoundTrip(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error) {
	return u.endpoint(target).Do(ctx, target, req)
}

// Go sends without a waiting goroutine (asyncUpstream).
func (u *ipUpstream) Go(target netip.AddrPort, req *coap.Message, timeout time.Duration, done func(*coap.Message, error)) {
	u.endpoint(target).Go(target, req, timeout, done)
}

func (u *ipUpstream) Observe(ctx context.Context, target netip.AddrPort, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	resp, obs, err := u.endpoint(target).Observe(ctx, target, req, notify)
	if err != nil || obs == nil {
		return resp, nil, err
	}
	return resp, stopper(req, obs), nil
}

// stopper is how the proxy ends an upstream observation when its last
// observer leaves: a GET with Observe=1 and the same token (RFC 7641
// §3.6), but for a protected one, which the proxy cannot cancel by a
// request (RFC 8613 §4.1.3.5.1): it forgets it, and the origin's next
// notification gets an RST.
func stopper(req *coap.Message, obs *coap.Observation) func(context.Context) error {
	if req.Options.Has(coap.OSCORE) {
		return obs.Forget
	}
	return obs.Cancel
}

func (u *ipUpstream) Close() error {
	err := u.v4.Close()
	if u.v6 != nil {
		err = errors.Join(err, u.v6.Close())
	}
	return err
}

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
	return resp, stopper(req, obs), nil
}

func (u *radioUpstream) Close() error {
	err := u.e.Close()
	return errors.Join(err, u.r.Close())
}

// pluginUpstream hands a request to the plugin that translates its scheme
// (plugins/httpcoap for http and https, ...). The plugin gets the target URI;
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
