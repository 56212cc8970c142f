package plugins

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// ErrPlugin is wrapped by errors a plugin caused: it failed the call,
// broke the protocol or sent bytes that are no CoAP message. The bridge
// answers them 5.02.
var ErrPlugin = errors.New("plugins: plugin failed")

// Translator is the upstream for one URI scheme a plugin serves. It
// survives the plugin's restarts; while the plugin is down, calls fail at
// once with a *coap.Error 5.03 whose MaxAge says when to retry.
type Translator struct {
	p      *plug
	scheme string
	// pending: the plugin has never started, and the scheme is one no
	// plugin serves; the answer is 5.03 until the plugin is up.
	pending bool
}

// Plugin names the plugin behind the translator.
func (t *Translator) Plugin() string { return t.p.cfg.Name }

// RoundTrip sends req to the plugin for targetURI and returns its
// response. A *coap.Error the plugin returned comes back as one; a
// cancelled or expired ctx as ctx.Err().
func (t *Translator) RoundTrip(ctx context.Context, targetURI string, req *coap.Message) (resp *coap.Message, err error) {
	defer recoverErr(&err, t.p, "round trip")
	inst, _ := t.p.current()
	if inst == nil || t.pending {
		return nil, t.p.unavailable()
	}
	t.p.requests.Add(1)
	b, err := wire.Encode(req)
	if err != nil {
		return nil, fmt.Errorf("plugins: %s: %w", t.p.cfg.Name, err)
	}
	r, err := inst.conns.tr.RoundTrip(ctx, &pb.RoundTripRequest{Target: targetURI, Message: b})
	if err != nil {
		return nil, t.p.callError(ctx, "round trip", err)
	}
	if f := r.GetFailure(); f != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("plugins: %s: round trip: %w", t.p.cfg.Name, ctx.Err())
		}
		return nil, t.p.failure("round trip", f)
	}
	return t.p.response("round trip", r.GetMessage())
}

// Observe registers an observation through the plugin and returns the
// first response; ctx bounds only the wait for it. notify gets every later
// notification, from one goroutine, until stop is called. When the plugin
// ends the observation on its own (it died, restarted or broke the
// protocol), notify gets a last 5.03 with Max-Age, which ends the
// observation for its observers (RFC 7641 §3.2) so that they register
// again. stop waits, within its ctx, for notify to be done.
func (t *Translator) Observe(ctx context.Context, targetURI string, req *coap.Message, notify func(*coap.Message)) (first *coap.Message, stop func(context.Context) error, err error) {
	defer recoverErr(&err, t.p, "observe")
	inst, _ := t.p.current()
	if inst == nil || t.pending {
		return nil, nil, t.p.unavailable()
	}
	if !inst.init.GetObserver() {
		// Without observe support the plugin can still answer the
		// request once; the response carries no Observe option, which
		// tells the client it is not observing (§3.2).
		resp, err := t.RoundTrip(ctx, targetURI, req)
		return resp, nil, err
	}
	t.p.requests.Add(1)
	b, err := wire.Encode(req)
	if err != nil {
		return nil, nil, fmt.Errorf("plugins: %s: %w", t.p.cfg.Name, err)
	}
	sctx, cancel := context.WithCancel(inst.ctx)
	stream, err := inst.conns.tr.Observe(sctx, &pb.RoundTripRequest{Target: targetURI, Message: b})
	if err != nil {
		cancel()
		return nil, nil, t.p.callError(ctx, "observe", err)
	}
	type result struct {
		m   *coap.Message
		err error
	}
	firstc := make(chan result, 1)
	done := make(chan struct{})
	t.p.h.wg.Add(1)
	go func() {
		defer t.p.h.wg.Done()
		defer close(done)
		defer cancel()
		var gotFirst bool
		defer func() {
			if r := recover(); r != nil {
				t.p.log.Error("panic in observe stream", "panic", r)
			}
		}()
		for {
			n, err := stream.Recv()
			var m *coap.Message
			if err == nil {
				if f := n.GetFailure(); f != nil {
					err = t.p.failure("observe", f)
				} else {
					m, err = t.p.response("observe", n.GetMessage())
				}
			}
			if !gotFirst {
				gotFirst = true
				firstc <- result{m, err}
				if err != nil {
					return
				}
				continue
			}
			if err != nil {
				if sctx.Err() == nil {
					// The plugin ended it: end it for the observers too.
					notify(&coap.Message{Code: coap.ServiceUnavailable, Options: coap.Options(nil).SetUint(coap.MaxAge, 1)})
				}
				return
			}
			notify(m)
		}
	}()
	select {
	case r := <-firstc:
		if r.err != nil {
			<-done
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			var se interface{ GRPCStatus() *status.Status }
			if errors.As(r.err, &se) {
				return nil, nil, t.p.callError(ctx, "observe", r.err)
			}
			return nil, nil, r.err
		}
		var once sync.Once
		stop = func(ctx context.Context) error {
			once.Do(cancel)
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return r.m, stop, nil
	case <-ctx.Done():
		cancel()
		<-done
		return nil, nil, ctx.Err()
	}
}

// callError maps a failed gRPC call to the error the proxy branches on.
func (p *plug) callError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("plugins: %s: %s: %w", p.cfg.Name, what, ctx.Err())
	}
	if status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("plugins: %s: %s: %w", p.cfg.Name, what, context.DeadlineExceeded)
	}
	if goneUnderCall(err) {
		return p.unavailable()
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrPlugin, p.cfg.Name, what, err)
}

// goneUnderCall reports whether a call whose own ctx is still live failed
// because the plugin went away under it: the connection broke
// (Unavailable), or the supervisor, having seen the process die, closed
// the connection while the call was being made (Canceled, "the client
// connection is closing").
func goneUnderCall(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}

func (p *plug) failure(what string, f *pb.Failure) error {
	err := wire.Error(f)
	var ce *coap.Error
	if errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrPlugin, p.cfg.Name, what, err)
}

// response decodes a response from the plugin; bytes that are no CoAP
// response are the plugin's fault.
func (p *plug) response(what string, b []byte) (*coap.Message, error) {
	m, err := wire.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %w", ErrPlugin, p.cfg.Name, what, err)
	}
	if !m.Code.IsResponse() {
		return nil, fmt.Errorf("%w: %s: %s: code %v is no response", ErrPlugin, p.cfg.Name, what, m.Code)
	}
	return m, nil
}

func recoverErr(err *error, p *plug, what string) {
	if r := recover(); r != nil {
		p.log.Error("panic in plugin call", "call", what, "panic", r)
		*err = fmt.Errorf("%w: %s: %s: panic: %v", ErrPlugin, p.cfg.Name, what, r)
	}
}
