package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/opaque-edge/gatewayd/coap"
)

// guard marks requests carrying the OSCORE option (RFC 8613 §2): from here
// on the proxy reads and rewrites only outer options (§4.1), never the
// payload. It keeps the request as it is here (coap.Request.Sealed); the
// route stage checks the message it sends against it with Verify and
// refuses to send one that differs in anything else. Other requests pass
// unmarked, at no cost.
func guard(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if r.Msg.Options.Has(coap.OSCORE) {
			sealed := *r
			sealed.Sealed = r.Msg.Clone()
			r = &sealed
		}
		return next.ServeCoAP(ctx, w, r)
	})
}

// ErrTampered is what Verify reports: a forwarded message differs from the
// received one in something the proxy may not change.
var ErrTampered = errors.New("bridge: forwarded message differs beyond what PR1.1/PR1.2 allow")

// Verify checks that out, the message the proxy sent on, differs from in,
// the one it received, only as the seed's PR1.1–PR1.3 and RFC 8768 allow:
// Proxy-Uri split into Uri-* options (or kept), Proxy-Scheme removed (or
// kept), Hop-Limit, and token, message ID and type, which are not compared.
// Code, payload and every other option, order and repeats included, must
// be byte-identical. For a response (PR1.3) only a 5.08's diagnostic may
// grow (RFC 8768 §4).
func Verify(in, out *coap.Message) error {
	if in.Code != out.Code {
		return fmt.Errorf("%w: code %v became %v", ErrTampered, in.Code, out.Code)
	}
	if !bytes.Equal(in.Payload, out.Payload) && in.Code != coap.HopLimitReached {
		return fmt.Errorf("%w: payload changed", ErrTampered)
	}
	// Copy first: Remove works in place.
	a := append(coap.Options(nil), in.Options...).Remove(coap.HopLimit)
	b := append(coap.Options(nil), out.Options...).Remove(coap.HopLimit)
	if pu, ok := a.Get(coap.ProxyURI); ok && !b.Has(coap.ProxyURI) {
		u, err := coap.ParseURI(string(pu))
		if err != nil {
			return fmt.Errorf("%w: unparsable Proxy-Uri was forwarded split", ErrTampered)
		}
		got := coap.URIFromOptions(b, u.Scheme, u.Host, u.Port)
		if !slices.Equal(got.Path, u.Path) || !slices.Equal(got.Query, u.Query) || got.Host != u.Host || got.Port != u.Port {
			return fmt.Errorf("%w: Uri-* options %s do not match Proxy-Uri %s", ErrTampered, got, u)
		}
		a = a.Remove(coap.ProxyURI)
		b = b.Remove(coap.URIHost).Remove(coap.URIPort).Remove(coap.URIPath).Remove(coap.URIQuery)
	}
	if a.Has(coap.ProxyScheme) && !b.Has(coap.ProxyScheme) {
		a = a.Remove(coap.ProxyScheme)
	}
	if !a.Equal(b) {
		return fmt.Errorf("%w: options %v became %v", ErrTampered, a, b)
	}
	return nil
}
