// Package sdk is the contract between gatewayd and its plugins, for plugin
// authors: the interfaces a plugin implements (Translator, Observer,
// FrontEnd, Radio), the Host a front end sends requests through, and
// Serve, which a plugin's main calls.
//
// A plugin is a separate executable that gatewayd starts and supervises
// (hashicorp/go-plugin over gRPC, with automatic mutual TLS). CoAP messages
// cross the boundary as their RFC 7252 encoding, so payloads and options
// arrive byte-exact; the SDK never looks inside a payload. Every call takes
// the caller's context, whose deadline and cancellation cross the boundary.
package sdk

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
)

// ProtocolVersion is the version of the plugin protocol. gatewayd refuses a
// plugin built against another one.
const ProtocolVersion = 1

// PluginName is the name both ends give the one go-plugin plugin they
// share.
const PluginName = "gatewayd"

// Handshake is what gatewayd and a plugin must agree on before anything
// else: a magic cookie (so that running a plugin by hand says what it is
// instead of hanging) and the protocol version.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "GATEWAYD_PLUGIN",
	MagicCookieValue: "6c3f0f6e-coap-gateway-plugin",
}

// ErrNoResponse is returned by Host.Do and Host.Observe when the chain
// deliberately left the request unanswered (No-Response, RFC 7967).
var ErrNoResponse = errors.New("sdk: no response")

// ErrObservationEnded is returned by Host.Observe after the message that
// ended the observation (RFC 7641 §3.2): a response or notification that is
// not 2.xx or carries no Observe option, which notify has been given. A
// first response without Observe means the resource was not observed at
// all (not observable, or gatewayd's Observe hub is at its limits, §4.1).
var ErrObservationEnded = errors.New("sdk: observation ended")

// Translator answers requests gatewayd routes to it: requests whose target
// URI has one of its Schemes. target is the absolute target URI; req is the
// request as the proxy forwards it. A response code that is an error (4.xx,
// 5.xx) is returned as a response; an error means no response could be had
// (a *coap.Error picks the code, anything else is 5.02 Bad Gateway).
type Translator interface {
	Schemes() []string
	RoundTrip(ctx context.Context, target string, req *coap.Message) (*coap.Message, error)
}

// Observer is an optional capability of a Translator: Observe registers an
// observation (RFC 7641) and returns the first response. notify is called
// with every later notification until cancel is called or ctx is done; it
// never blocks, and a slow host sees only the latest notification. notify
// may keep the message it is given; the SDK copies it.
type Observer interface {
	Observe(ctx context.Context, target string, req *coap.Message, notify func(notification *coap.Message)) (first *coap.Message, cancel func(), err error)
}

// FrontEnd is a plugin's own listener (an HTTP server, an MQTT client):
// Run serves until ctx is done, sending requests into gatewayd's chain
// through host. gatewayd calls Run once per plugin start.
type FrontEnd interface {
	Run(ctx context.Context, host Host) error
}

// Host is gatewayd as a FrontEnd sees it. Do runs req through the request
// chain, as if it had come from a client of its own (secure says whether it
// came over a secured transport, as the coaps scheme does), and returns the
// response; ErrNoResponse when there is none.
//
// Observe observes req's resource (a GET or FETCH; RFC 7641) through the
// same chain: gatewayd's Observe hub counts the plugin as one more
// observer, sharing the one upstream observation with every other
// observer of the resource (§5). notify is called with the first response
// and then with each notification, in order, on the caller's goroutine;
// while it runs, newer notifications replace older ones in gatewayd, so a
// slow notify sees the latest state, not every state (§4.5). Observe
// returns when the observation ends: ctx's error when ctx ended it
// (gatewayd then deregisters the observer, §3.6), ErrObservationEnded
// after the message that ended it, ErrNoResponse when the chain did not
// answer, or another error (the stream broke: gatewayd restarted, or is
// older than this SDK). The request's Observe option and token are
// gatewayd's to set; what notify gets carries req's token.
type Host interface {
	Do(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error)
	Observe(ctx context.Context, req *coap.Message, secure bool, notify func(*coap.Message)) error
}

// Radio is a radio driver in a plugin: a radio.Link (MAC frames without FCS;
// Send returns radio.ErrNoAck, radio.ErrChannelBusy, radio.ErrDown, ... so
// that gatewayd can tell them apart) plus Info.
type Radio interface {
	radio.Link
	Info(ctx context.Context) (RadioInfo, error)
}

// RadioInfo is what a Radio tells about itself.
type RadioInfo struct {
	ExtAddr  [8]byte // EUI-64, canonical order; zero while unknown
	Up       bool
	Counters radio.LinkCounters
}

// RadioConfigurer is an optional capability of a Radio: gatewayd calls
// Configure with the [[radio]] table's channel and PAN ID after every
// plugin start.
type RadioConfigurer interface {
	Configure(ctx context.Context, channel uint8, panID uint16) error
}

// Plugin is what a plugin offers; nil fields are capabilities it lacks.
// Parts that implement io.Closer are closed when the plugin stops.
type Plugin struct {
	Translator Translator
	FrontEnd   FrontEnd
	Radio      Radio
}

// InitFunc builds the plugin from its [[plugin]] config table (JSON; an
// empty object when there is none). name is the [[plugin]] name.
type InitFunc func(ctx context.Context, name string, config []byte) (*Plugin, error)

// ServeOpts configure Serve.
type ServeOpts struct {
	Init InitFunc // required
}
