// Command gatewayd-http is the gatewayd plugin for HTTP: an HTTP-to-CoAP
// proxy front end (RFC 8075, OSCORE over HTTP per RFC 8613 §11) that sends
// requests into gatewayd's chain, and a translator for the http and https
// schemes so that CoAP nodes can reach HTTP servers. gatewayd starts it;
// run by hand it says so and exits.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/httpcoap"
	"github.com/opaque-edge/gatewayd/plugins/sdk"
)

func main() { sdk.Serve(sdk.ServeOpts{Init: newPlugin}) }

// config is the [[plugin]] config table of gatewayd-http.
type config struct {
	Listen           string   `json:"listen"` // default 127.0.0.1:8080; "off": translator only
	Prefix           string   `json:"prefix"`
	MaxBody          int64    `json:"max_body"`
	Timeout          int      `json:"timeout"` // seconds
	Loose            bool     `json:"loose"`
	AllowCoAPPayload bool     `json:"allow_coap_payload"`
	ClientTimeout    int      `json:"client_timeout"` // seconds
	MaxResponse      int64    `json:"max_response"`
	AllowHosts       []string `json:"allow_hosts"`
}

func newPlugin(_ context.Context, name string, raw []byte) (*sdk.Plugin, error) {
	var c config
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("gatewayd-http: config of %s: %w", name, err)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	hcfg := httpcoap.Config{
		Prefix: c.Prefix, MaxBody: c.MaxBody, Timeout: time.Duration(c.Timeout) * time.Second,
		Loose: c.Loose, AllowCoAPPayload: c.AllowCoAPPayload,
	}
	if err := hcfg.Validate(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil && c.Listen != "off" {
		return nil, fmt.Errorf("gatewayd-http: listen %q: %w", c.Listen, err)
	}
	client, err := httpcoap.NewClient(httpcoap.ClientConfig{
		Timeout: time.Duration(c.ClientTimeout) * time.Second, MaxResponse: c.MaxResponse, AllowHosts: c.AllowHosts,
	})
	if err != nil {
		return nil, err
	}
	p := &sdk.Plugin{Translator: &translator{c: client}}
	if c.Listen != "off" {
		p.FrontEnd = &frontEnd{listen: c.Listen, cfg: hcfg}
	}
	return p, nil
}

// translator serves Proxy-Uri http(s):// requests routed to the plugin.
type translator struct{ c *httpcoap.Client }

func (t *translator) Schemes() []string { return []string{"http", "https"} }

func (t *translator) RoundTrip(ctx context.Context, target string, req *coap.Message) (*coap.Message, error) {
	return t.c.RoundTrip(ctx, target, req)
}

func (t *translator) Close() error { t.c.CloseIdleConnections(); return nil }

// frontEnd is the HTTP server.
type frontEnd struct {
	listen string
	cfg    httpcoap.Config
}

func (f *frontEnd) Run(ctx context.Context, host sdk.Host) error {
	do := func(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error) {
		resp, err := host.Do(ctx, req, secure)
		if errors.Is(err, sdk.ErrNoResponse) {
			// No-Response asked for silence; HTTP must answer something.
			return &coap.Message{Code: coap.Changed}, nil
		}
		return resp, err
	}
	h, err := httpcoap.NewHandler(f.cfg, do)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", f.listen)
	if err != nil {
		return fmt.Errorf("gatewayd-http: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	err = srv.Serve(l)
	cancel() // Serve failed on its own: stop the shutdown goroutine too
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("gatewayd-http: %w", err)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
