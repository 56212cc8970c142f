// Command echoplugin is a test plugin: a translator that echoes requests,
// an observer that counts, and, when configured, a front end that sends one
// request into the host's chain or observes a resource through it.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

type config struct {
	Scheme   string `json:"scheme"`
	FrontEnd bool   `json:"front_end"`
	// Observe is a Uri-Path the front end observes with Host.Observe
	// instead of sending its GET /hello.
	Observe string `json:"observe"`
	// Digest records what the observation got as its length and
	// SHA-256 prefix instead of the payload: for large ones.
	Digest bool `json:"digest"`
}

type echo struct {
	scheme  string
	observe string
	digest  bool

	mu       sync.Mutex
	last     *coap.Message      // the front end's last Host.Do response; guarded by mu
	err      error              // guarded by mu
	observed []string           // guarded by mu: payloads Host.Observe passed, in order
	obsEnd   error              // guarded by mu: what Host.Observe returned
	obsStop  context.CancelFunc // guarded by mu: ends the observation
}

func (e *echo) Schemes() []string { return []string{e.scheme} }

// RoundTrip echoes the request's payload and options in a 2.05; a few
// targets do other things.
func (e *echo) RoundTrip(ctx context.Context, target string, req *coap.Message) (*coap.Message, error) {
	switch {
	case strings.HasSuffix(target, "/panic"):
		panic("asked to")
	case strings.HasSuffix(target, "/fail"):
		return nil, coap.Errorf(coap.GatewayTimeout, "asked to fail")
	case strings.HasSuffix(target, "/warn"):
		// A plugin's own log line, as log/slog's text handler writes it.
		fmt.Fprintf(os.Stderr, "time=2026-01-01T00:00:00Z level=WARN msg=%q\n", string(req.Payload))
	case strings.HasSuffix(target, "/slow"):
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
		}
	case strings.HasSuffix(target, "/observed"):
		// The payloads the front end's observation got, comma-separated,
		// then "|" and how it ended, if it has.
		e.mu.Lock()
		defer e.mu.Unlock()
		p := strings.Join(e.observed, ",")
		if e.obsEnd != nil {
			p += "|" + e.obsEnd.Error()
		}
		return &coap.Message{Code: coap.Content, Payload: []byte(p)}, nil
	case strings.HasSuffix(target, "/unobserve"):
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.obsStop == nil {
			return nil, coap.Errorf(coap.ServiceUnavailable, "not observing yet")
		}
		e.obsStop()
		return &coap.Message{Code: coap.Changed}, nil
	case strings.HasSuffix(target, "/frontend"):
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.err != nil {
			return nil, e.err
		}
		if e.last == nil {
			return nil, coap.Errorf(coap.ServiceUnavailable, "no response yet")
		}
		return e.last, nil
	}
	resp := &coap.Message{Code: coap.Content, Options: req.Options, Payload: req.Payload}
	return resp, nil
}

// Observe sends the first response, then notifications 1, 2, 3, ...
// every 20 ms until cancelled.
func (e *echo) Observe(ctx context.Context, target string, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(1); ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			notify(&coap.Message{Code: coap.Content, Options: coap.Options(nil).SetUint(coap.Observe, i), Payload: []byte(fmt.Sprint(i))})
		}
	}()
	first := &coap.Message{Code: coap.Content, Options: coap.Options(nil).SetUint(coap.Observe, 0), Payload: []byte("0")}
	return first, func() { cancel(); wg.Wait() }, nil
}

// Run sends one GET /hello into the chain and keeps the response, or
// observes e.observe until asked to stop and keeps what it gets.
func (e *echo) Run(ctx context.Context, host sdk.Host) error {
	if e.observe != "" {
		octx, stop := context.WithCancel(ctx)
		defer stop()
		e.mu.Lock()
		e.obsStop = stop
		e.mu.Unlock()
		req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: 9, Token: []byte{3},
			Options: coap.Options(nil).Insert(coap.URIPath, []byte(e.observe))}
		err := host.Observe(octx, req, false, func(m *coap.Message) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if string(m.Token) != "\x03" {
				e.observed = append(e.observed, "wrong-token")
			}
			if e.digest {
				h := sha256.Sum256(m.Payload)
				e.observed = append(e.observed, fmt.Sprintf("%d:%x", len(m.Payload), h[:8]))
				return
			}
			e.observed = append(e.observed, string(m.Payload))
		})
		var tl *blockwise.TooLargeError
		if errors.As(err, &tl) {
			// The typed error crossed the boundary.
			err = fmt.Errorf("too large: %d over %d: %w", tl.Size, tl.Max, err)
		}
		e.mu.Lock()
		e.obsEnd = err
		e.mu.Unlock()
		<-ctx.Done()
		return nil
	}
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: 7, Token: []byte{1, 2},
		Options: coap.Options(nil).Insert(coap.URIPath, []byte("hello")), Payload: []byte("from-plugin")}
	resp, err := host.Do(ctx, req, true)
	e.mu.Lock()
	e.last, e.err = resp, err
	e.mu.Unlock()
	<-ctx.Done()
	return nil
}

func newPlugin(_ context.Context, _ string, raw []byte) (*sdk.Plugin, error) {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	if c.Scheme == "" {
		c.Scheme = "echo"
	}
	e := &echo{scheme: c.Scheme, observe: c.Observe, digest: c.Digest}
	p := &sdk.Plugin{Translator: e}
	if c.FrontEnd {
		p.FrontEnd = e
	}
	return p, nil
}

func main() { sdk.Serve(sdk.ServeOpts{Init: newPlugin}) }
