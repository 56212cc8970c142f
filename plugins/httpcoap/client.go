package httpcoap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// ClientConfig configures the CoAP-to-HTTP Client.
type ClientConfig struct {
	// Timeout bounds one HTTP exchange, body included; it then answers
	// 5.04. Default 30 s.
	Timeout time.Duration `toml:"timeout"`
	// MaxResponse bounds a response body; a longer one is 5.02. CoAP
	// clients behind a radio rarely want more. Default 64 KiB.
	MaxResponse int64 `toml:"max_response"`
	// AllowHosts, when not empty, lists the only hosts (as in the URI,
	// without port or brackets) nodes may reach; others get 5.05. It
	// keeps nodes from using the gateway to reach the operator's LAN.
	AllowHosts []string `toml:"allow_hosts"`
	// Transport replaces the HTTP transport (tests, proxies). Its own
	// timeouts then apply besides Timeout.
	Transport http.RoundTripper `toml:"-"`
}

// Defaults for ClientConfig.
const (
	DefaultClientTimeout = 30 * time.Second
	DefaultMaxResponse   = 64 << 10
)

// Validate reports a configuration the Client cannot use.
func (c ClientConfig) Validate() error {
	if c.MaxResponse > MaxMaxBody {
		return fmt.Errorf("http: max_response %d over 4 MiB", c.MaxResponse)
	}
	for _, h := range c.AllowHosts {
		if h == "" || strings.ContainsAny(h, "/@ []") {
			return fmt.Errorf("http: allow_hosts entry %q is not a host", h)
		}
	}
	return nil
}

// Client performs CoAP requests on http and https resources (RFC 7252
// §10.1) with net/http, so nodes can reach HTTP servers through the
// gateway. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	hc  *http.Client
}

// NewClient returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultClientTimeout
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	rt := cfg.Transport
	if rt == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		rt = &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            d.DialContext,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  cfg.Timeout,
			MaxIdleConns:           16,
			MaxIdleConnsPerHost:    4,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			ForceAttemptHTTP2:      true,
		}
	}
	hc := &http.Client{
		Transport: rt,
		Timeout:   cfg.Timeout,
		// Redirects are not followed: CoAP has none to map them to, and
		// an OSCORE body must not be replayed to another origin.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{cfg: cfg, hc: hc}, nil
}

// CloseIdleConnections closes kept-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// RoundTrip performs req on target, an http or https URI (usually the
// request's Proxy-Uri), and returns the CoAP response. Outcomes HTTP
// reports are responses; a failure to reach the origin is a *coap.Error
// (5.02, 5.04 or 5.05) that the chain answers with. Token and message ID
// of the response are left zero.
func (c *Client) RoundTrip(ctx context.Context, target string, req *coap.Message) (*coap.Message, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, coap.Errorf(coap.ProxyingNotSupported, "http: not an http(s) URI")
	}
	if len(c.cfg.AllowHosts) > 0 && !slices.ContainsFunc(c.cfg.AllowHosts, func(h string) bool { return strings.EqualFold(h, u.Hostname()) }) {
		return nil, coap.Errorf(coap.ProxyingNotSupported, "http: host %s not allowed", u.Hostname())
	}
	method, ok := httpMethod(req.Code)
	if !ok {
		return nil, coap.Errorf(coap.MethodNotAllowed, "http: no HTTP method for %v", req.Code)
	}
	oscoreOpt, isOSCORE := req.Options.Get(coap.OSCORE)
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(req.Payload))
	if err != nil {
		return nil, coap.Errorf(coap.BadRequest, "http: %v", err)
	}
	hreq.ContentLength = int64(len(req.Payload))
	hreq.Header.Set("User-Agent", "gatewayd-http")
	conditional := false
	if isOSCORE {
		// RFC 8613 §11.2: header field and media type, body untouched.
		hreq.Header.Set(HeaderOSCORE, EncodeOSCORE(oscoreOpt))
		hreq.Header.Set("Content-Type", OSCOREMediaType)
	} else {
		if cf, ok := req.Options.Uint(coap.ContentFormat); ok && len(req.Payload) > 0 {
			media, enc := coap.MediaType(uint16(cf))
			hreq.Header.Set("Content-Type", media)
			if enc != "" {
				hreq.Header.Set("Content-Encoding", enc)
			}
		}
		if cf, ok := req.Options.Uint(coap.Accept); ok {
			media, _ := coap.MediaType(uint16(cf))
			hreq.Header.Set("Accept", media)
		}
		// HTTP entity-tags from this direction are the origin's own
		// opaque-tags, which fit a CoAP ETag only when short; see
		// originETag.
		var tags []string
		for v := range req.Options.All(coap.ETag) {
			tags = append(tags, `"`+string(v)+`"`)
		}
		if len(tags) > 0 && (method == http.MethodGet) {
			hreq.Header.Set("If-None-Match", strings.Join(tags, ", "))
			conditional = true
		}
		if req.Options.Has(coap.IfNoneMatch) {
			hreq.Header.Set("If-None-Match", "*")
		}
		var im []string
		for v := range req.Options.All(coap.IfMatch) {
			if len(v) == 0 {
				im = []string{"*"}
				break
			}
			im = append(im, `"`+string(v)+`"`)
		}
		if len(im) > 0 {
			hreq.Header.Set("If-Match", strings.Join(im, ", "))
		}
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, &coap.Error{Code: coap.GatewayTimeout, Diagnostic: "http: origin timed out", MaxAge: -1, Err: err}
		}
		return nil, &coap.Error{Code: coap.BadGateway, Diagnostic: "http: origin unreachable", MaxAge: -1, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponse+1))
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, &coap.Error{Code: coap.GatewayTimeout, Diagnostic: "http: origin timed out", MaxAge: -1, Err: err}
		}
		return nil, &coap.Error{Code: coap.BadGateway, Diagnostic: "http: reading response", MaxAge: -1, Err: err}
	}
	if int64(len(body)) > c.cfg.MaxResponse {
		return nil, coap.Errorf(coap.BadGateway, "http: response over %d bytes", c.cfg.MaxResponse)
	}
	return c.mapResponse(req.Code, resp, body, isOSCORE, conditional)
}

// httpMethod maps a CoAP method to HTTP. iPATCH is an idempotent PATCH,
// so HTTP PATCH serves it; FETCH has no HTTP method.
func httpMethod(c coap.Code) (string, bool) {
	switch c {
	case coap.GET:
		return http.MethodGet, true
	case coap.POST:
		return http.MethodPost, true
	case coap.PUT:
		return http.MethodPut, true
	case coap.DELETE:
		return http.MethodDelete, true
	case coap.PATCH, coap.IPATCH:
		return http.MethodPatch, true
	}
	return "", false
}

func (c *Client) mapResponse(m coap.Code, resp *http.Response, body []byte, reqOSCORE, conditional bool) (*coap.Message, error) {
	out := &coap.Message{Type: coap.Acknowledgement}
	if field := resp.Header.Get(HeaderOSCORE); field != "" {
		// RFC 8613 §11.3: the OSCORE option from the header field, no
		// Content-Format, ciphertext untouched. 200 is the outer 2.04
		// (§11.6).
		opt, err := DecodeOSCORE(field)
		if err != nil {
			return nil, coap.Errorf(coap.BadGateway, "%v", err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, coap.Errorf(coap.BadGateway, "http: OSCORE header field with status %d", resp.StatusCode)
		}
		out.Code = coap.Changed
		out.Options = out.Options.Insert(coap.OSCORE, opt)
		out.Payload = body
		return out, nil
	}
	code, ok := codeOf(resp.StatusCode, m, conditional)
	if !ok {
		return nil, coap.Errorf(coap.BadGateway, "http: origin answered %d", resp.StatusCode)
	}
	out.Code = code
	if reqOSCORE && code.Class() == 2 {
		// A protected request cannot get an unprotected success.
		return nil, coap.Errorf(coap.BadGateway, "http: unprotected %d to an OSCORE request", resp.StatusCode)
	}
	if len(body) > 0 {
		cf := uint16(42)
		if code.Class() != 2 {
			cf = 0 // diagnostic payloads are text (RFC 7252 §5.5.2)
			body = diagnostic(body)
		} else if ct := resp.Header.Get("Content-Type"); ct != "" {
			// §6.3's generalisation ends in application/octet-stream, so
			// any body has a content format.
			if id, ok := coap.ContentFormatOf(ct, resp.Header.Get("Content-Encoding"), coap.Generalize|coap.AllowPayloadType); ok {
				cf = id
			} else if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
				return nil, coap.Errorf(coap.BadGateway, "http: content coding %s has no CoAP format", enc)
			}
		}
		if code.Class() == 2 {
			out.Options = out.Options.SetUint(coap.ContentFormat, uint32(cf))
		}
		out.Payload = body
	}
	if code == coap.Content || code == coap.Valid {
		out.Options = out.Options.SetUint(coap.MaxAge, freshness(resp))
		if tag, ok := originETag(resp.Header.Get("ETag")); ok {
			out.Options = out.Options.Insert(coap.ETag, tag)
		}
	}
	if code == coap.ServiceUnavailable || code == coap.TooManyRequests {
		if s, err := strconv.ParseUint(resp.Header.Get("Retry-After"), 10, 32); err == nil {
			out.Options = out.Options.SetUint(coap.MaxAge, uint32(s))
		}
	}
	return out, nil
}

// diagnostic bounds a diagnostic payload: it is for humans and costs radio
// time.
func diagnostic(b []byte) []byte {
	const limit = 128
	if len(b) > limit {
		b = b[:limit]
	}
	return b
}

// freshness is the Max-Age for an HTTP response (RFC 7252 §10.1.1: no
// greater than the time left fresh): s-maxage or max-age less Age, and 0
// when the response may not be reused or says nothing.
func freshness(resp *http.Response) uint32 {
	var maxAge, sMaxAge int64 = -1, -1
	for _, cc := range resp.Header.Values("Cache-Control") {
		for _, d := range strings.Split(cc, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(k) {
			case "no-store", "no-cache", "private":
				return 0
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64); err == nil {
					maxAge = n
				}
			case "s-maxage":
				if n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64); err == nil {
					sMaxAge = n
				}
			}
		}
	}
	age := sMaxAge // a shared cache goes by s-maxage first
	if age < 0 {
		age = maxAge
	}
	if age < 0 {
		return 0
	}
	if a, err := strconv.ParseInt(resp.Header.Get("Age"), 10, 64); err == nil && a > 0 {
		age -= a
	}
	return uint32(min(max(age, 0), 1<<32-1))
}

// originETag maps an HTTP origin's strong entity-tag to a CoAP ETag when
// its opaque-tag fits the 8 bytes CoAP allows; weak or longer tags are
// dropped (no CoAP validation then, only Max-Age).
func originETag(v string) ([]byte, bool) {
	if len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	tag := v[1 : len(v)-1]
	if len(tag) > 8 {
		return nil, false
	}
	return []byte(tag), true
}
