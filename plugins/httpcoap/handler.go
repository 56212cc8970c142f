package httpcoap

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

// DoFunc sends a CoAP request into gatewayd's chain (access control, guard,
// Observe hub, cache, routing) and returns the response. secure reports
// that the HTTP request arrived over TLS, as coap.Request.Secure does for
// DTLS. The request carries no token or message ID; the chain sets them.
type DoFunc func(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error)

// Config configures the HTTP-to-CoAP Handler.
type Config struct {
	// Prefix is the HC Proxy URI path of RFC 8075 §5.3: the Target CoAP
	// URI follows it. Default "/hc/".
	Prefix string `toml:"prefix"`
	// MaxBody bounds a request body; a longer one gets 413. Default 64 KiB.
	MaxBody int64 `toml:"max_body"`
	// Timeout bounds one CoAP exchange; it then answers 504. RFC 8075
	// §8.5 suggests MAX_RTT + 250 s, longer than HTTP clients wait, so
	// the default is 60 s.
	Timeout time.Duration `toml:"timeout"`
	// Loose enables the media type generalisation of RFC 8075 §6.3.
	Loose bool `toml:"loose"`
	// AllowCoAPPayload lets application/coap-payload;cf=N through
	// (RFC 8075 §6.2 forbids it unless configured).
	AllowCoAPPayload bool         `toml:"allow_coap_payload"`
	Logger           *slog.Logger `toml:"-"`
}

// Defaults for Config.
const (
	DefaultPrefix  = "/hc/"
	DefaultMaxBody = 64 << 10
	DefaultTimeout = 60 * time.Second
	// MaxMaxBody bounds max_body and max_response: no larger body
	// crosses the plugin boundary to gatewayd (whose own max_body for
	// the plugin is at most this too).
	MaxMaxBody = 4 << 20
)

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate reports a configuration the Handler cannot use.
func (c Config) Validate() error {
	c = c.withDefaults()
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("http: prefix %q must start and end with /", c.Prefix)
	}
	if c.MaxBody > MaxMaxBody {
		return fmt.Errorf("http: max_body %d over 4 MiB", c.MaxBody)
	}
	return nil
}

// Stats are the Handler's counters.
type Stats struct {
	Requests       uint64 // HTTP requests seen
	OSCORE         uint64 // of which carried the OSCORE header field
	Rejected       uint64 // answered 4xx/501 by the handler without a CoAP exchange
	UpstreamErrors uint64 // Do returned an error, no response, or one block of several (mapped to 5xx)
}

// Handler is an HTTP-to-CoAP proxy (RFC 8075) in front of a DoFunc. Mount
// it as the server's handler itself, not under an http.ServeMux: the
// Target CoAP URI contains "//", which ServeMux cleans and redirects.
type Handler struct {
	cfg Config
	do  DoFunc
	log *slog.Logger

	requests, oscore, rejected, upstream atomic.Uint64
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns a Handler sending requests through do.
func NewHandler(cfg Config, do DoFunc) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if do == nil {
		return nil, errors.New("http: nil DoFunc")
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, do: do, log: log}, nil
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	return Stats{
		Requests: h.requests.Load(), OSCORE: h.oscore.Load(),
		Rejected: h.rejected.Load(), UpstreamErrors: h.upstream.Load(),
	}
}

// maxProxyURI is the longest Proxy-Uri value (RFC 7252 §5.10).
const maxProxyURI = 1034

// ServeHTTP translates one HTTP request into a CoAP request, runs it
// through the chain and translates the response back.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	target, err := h.targetURI(r)
	if err != nil {
		h.reject(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := coap.ParseURI(target)
	if err != nil {
		h.reject(w, http.StatusBadRequest, err.Error())
		return
	}
	if u.Scheme != "coap" && u.Scheme != "coaps" {
		h.reject(w, http.StatusBadRequest, "not a coap or coaps URI: "+u.Scheme)
		return
	}
	code, ok := methodCode(r.Method)
	if !ok {
		// RFC 7252 §10.2.1: OPTIONS and TRACE (and anything else CoAP
		// lacks) are 501.
		h.reject(w, http.StatusNotImplemented, "no CoAP method for "+r.Method)
		return
	}
	req := &coap.Message{Type: coap.Confirmable, Code: code}
	if s := u.String(); len(s) <= maxProxyURI {
		req.Options = req.Options.Insert(coap.ProxyURI, []byte(s))
	} else {
		// Too long for Proxy-Uri: Proxy-Scheme plus Uri-* (§5.10.2).
		req.Options = u.SetOptions(req.Options, u.Port).Insert(coap.ProxyScheme, []byte(u.Scheme))
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.reject(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", h.cfg.MaxBody))
			return
		}
		h.reject(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}

	x := exchange{}
	if field := r.Header.Get(HeaderOSCORE); field != "" || len(r.Header.Values(HeaderOSCORE)) > 0 {
		if status, msg := h.oscoreRequest(r, req, field, body); status != 0 {
			h.reject(w, status, msg)
			return
		}
		x.oscore = true
		h.oscore.Add(1)
	} else if status, msg := h.plainRequest(r, req, body, &x); status != 0 {
		h.reject(w, status, msg)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	resp, err := h.do(ctx, req, r.TLS != nil)
	if err != nil {
		h.upstream.Add(1)
		h.writeError(w, r, err)
		return
	}
	if resp == nil || !resp.Code.IsResponse() {
		h.upstream.Add(1)
		writeText(w, http.StatusBadGateway, "no CoAP response")
		return
	}
	if b, ok, err := blockwise.Get(resp.Options, coap.Block2); err != nil || ok && (b.More || b.Num != 0) {
		// One block of a larger representation (RFC 7959): a DoFunc that
		// does not complete block-wise transfers. Never passed off as
		// the whole (RFC 8075 §8.3 has the HC proxy fetch the rest).
		h.upstream.Add(1)
		writeText(w, http.StatusBadGateway, "incomplete CoAP representation: one block of a block-wise transfer")
		return
	}
	h.writeResponse(w, r, u, resp, x)
}

// exchange is what the response mapping needs to know of the request.
type exchange struct {
	oscore       bool
	conditional  bool // the CoAP request carries ETag options to validate
	headerOption bool // options were mapped from client header fields
}

// targetURI extracts the Target CoAP URI from the raw request target:
// origin form under the prefix (RFC 8075 §5.3, percent-encoded brackets
// per §5.3.2 undone), or absolute form naming a coap URI (RFC 7252 §10.2).
func (h *Handler) targetURI(r *http.Request) (string, error) {
	raw := r.RequestURI
	if raw == "" && r.URL != nil {
		raw = r.URL.RequestURI()
	}
	var t string
	switch {
	case strings.HasPrefix(raw, h.cfg.Prefix):
		t = raw[len(h.cfg.Prefix):]
	case strings.HasPrefix(strings.ToLower(raw), "coap://"), strings.HasPrefix(strings.ToLower(raw), "coaps://"):
		t = raw
	default:
		return "", fmt.Errorf("http: %q is not under %s", raw, h.cfg.Prefix)
	}
	i := strings.Index(t, "://")
	if i <= 0 {
		// §5.3.1: no agreed default scheme, so omitting it is an error.
		return "", fmt.Errorf("http: target %q has no scheme", t)
	}
	rest := t[i+3:]
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	auth = strings.NewReplacer("%5B", "[", "%5b", "[", "%5D", "]", "%5d", "]").Replace(auth)
	return t[:i+3] + auth + rest[end:], nil
}

// methodCode maps an HTTP method to a CoAP method. HEAD is a GET whose
// body is dropped (RFC 7252 §10.2.3). FETCH and iPATCH are not HTTP
// methods, but HTTP allows any token, so a client that knows CoAP can ask
// for them by name (RFC 8132).
func methodCode(m string) (coap.Code, bool) {
	switch m {
	case http.MethodGet, http.MethodHead:
		return coap.GET, true
	case http.MethodPost:
		return coap.POST, true
	case http.MethodPut:
		return coap.PUT, true
	case http.MethodDelete:
		return coap.DELETE, true
	case http.MethodPatch:
		return coap.PATCH, true // RFC 8132 §3: PATCH is PATCH; iPATCH only by name
	case "FETCH":
		return coap.FETCH, true
	case "IPATCH", "iPATCH":
		return coap.IPATCH, true
	}
	return 0, false
}

// oscoreRequest fills req from an HTTP request with the OSCORE header
// field (RFC 8613 §11.3). Nothing of the body is read or changed. It
// returns a status and message when the request cannot be mapped.
func (h *Handler) oscoreRequest(r *http.Request, req *coap.Message, field string, body []byte) (int, string) {
	if len(r.Header.Values(HeaderOSCORE)) != 1 {
		return http.StatusBadRequest, "exactly one OSCORE header field is allowed"
	}
	// The outer code of an OSCORE request is POST, or FETCH for Observe
	// (RFC 8613 §4.2); §11.1 uses the header field in POST requests only.
	if req.Code != coap.POST && req.Code != coap.FETCH {
		return http.StatusBadRequest, "OSCORE requests use POST or FETCH, not " + r.Method
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), OSCOREMediaType) {
		return http.StatusUnsupportedMediaType, "OSCORE requests carry Content-Type application/oscore"
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return http.StatusUnsupportedMediaType, "OSCORE payload with content coding " + enc
	}
	opt, err := DecodeOSCORE(field)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}
	req.Options = req.Options.Insert(coap.OSCORE, opt)
	// §11.3: no Content-Format; the ciphertext goes as is.
	req.Payload = body
	return 0, ""
}

// plainRequest maps the header fields of an unprotected request.
func (h *Handler) plainRequest(r *http.Request, req *coap.Message, body []byte, x *exchange) (int, string) {
	if len(body) > 0 {
		req.Payload = body
		if ct := r.Header.Get("Content-Type"); ct != "" {
			cf, ok := coap.ContentFormatOf(ct, r.Header.Get("Content-Encoding"), match(h.cfg.Loose, h.cfg.AllowCoAPPayload))
			if !ok {
				// RFC 8075 §6.1: SHALL elicit 415.
				return http.StatusUnsupportedMediaType, "no CoAP content format for " + ct
			}
			req.Options = req.Options.SetUint(coap.ContentFormat, uint32(cf))
		} else if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
			return http.StatusUnsupportedMediaType, "content coding " + enc + " without media type"
		}
	}
	if a := r.Header.Values("Accept"); len(a) > 0 {
		if strings.Contains(strings.ToLower(strings.Join(a, ",")), coap.PayloadMediaType) && !h.cfg.AllowCoAPPayload {
			return http.StatusNotAcceptable, coap.PayloadMediaType + " is not forwarded"
		}
		if cf, ok := acceptFormat(strings.Join(a, ","), h.cfg.AllowCoAPPayload); ok {
			req.Options = req.Options.SetUint(coap.Accept, uint32(cf))
			x.headerOption = true
		}
	}
	inm := r.Header.Get("If-None-Match")
	switch {
	case inm == "":
	case strings.TrimSpace(inm) == "*":
		// Create only if absent: CoAP If-None-Match (§5.10.8.2).
		req.Options = req.Options.Insert(coap.IfNoneMatch, []byte{})
		x.headerOption = true
	case req.Code == coap.GET:
		// A conditional GET is a CoAP validation (§5.10.6.2): ETag
		// options, answered 2.03 → 304.
		for _, tag := range parseETags(inm) {
			req.Options = req.Options.Insert(coap.ETag, tag)
			x.conditional, x.headerOption = true, true
		}
	}
	if im := r.Header.Get("If-Match"); im != "" {
		if strings.TrimSpace(im) == "*" {
			req.Options = req.Options.Insert(coap.IfMatch, []byte{})
		} else {
			for _, tag := range parseETags(im) {
				req.Options = req.Options.Insert(coap.IfMatch, tag)
			}
		}
		x.headerOption = true
	}
	return 0, ""
}

// ETags: a CoAP ETag is 1–8 opaque bytes; the HTTP entity-tag made from it
// is its base64url encoding, quoted, which is always valid etagc and maps
// back exactly. An HTTP entity-tag that does not decode to 1–8 bytes was
// not made here and is ignored (the request goes unconditionally), as are
// weak tags: CoAP ETags are strong (RFC 7252 §10.1.1).

func formatETag(tag []byte) string {
	return `"` + base64.RawURLEncoding.EncodeToString(tag) + `"`
}

func parseETags(field string) [][]byte {
	var tags [][]byte
	for _, t := range strings.Split(field, ",") {
		t = strings.TrimSpace(t)
		if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' {
			continue
		}
		v, err := base64.RawURLEncoding.Strict().DecodeString(t[1 : len(t)-1])
		if err != nil || len(v) == 0 || len(v) > 8 {
			continue
		}
		tags = append(tags, v)
	}
	return tags
}

// writeResponse maps a CoAP response to HTTP (RFC 8075 §6, §7; RFC 8613
// §11.2 when it carries the OSCORE option).
func (h *Handler) writeResponse(w http.ResponseWriter, r *http.Request, u *coap.URI, resp *coap.Message, x exchange) {
	hdr := w.Header()
	opt, isOSCORE := resp.Options.Get(coap.OSCORE)
	status := statusOf(resp.Code, len(resp.Payload) > 0, x.conditional, x.headerOption)
	body := resp.Payload
	switch {
	case isOSCORE:
		// §11.1: the header field is used in 200 responses; every
		// successful outer code (2.04, or 2.05 for a notification) is 200,
		// with or without body.
		if resp.Code.Class() == 2 {
			status = http.StatusOK
		}
		hdr.Set(HeaderOSCORE, EncodeOSCORE(opt))
		hdr.Set("Content-Type", OSCOREMediaType)
		hdr.Set("Cache-Control", "no-cache")
	case resp.Code.Class() == 2:
		if cf, ok := resp.Options.Uint(coap.ContentFormat); ok && len(body) > 0 {
			media, enc := coap.MediaType(uint16(cf))
			hdr.Set("Content-Type", media)
			if enc != "" {
				hdr.Set("Content-Encoding", enc)
			}
		}
		if tag, ok := resp.Options.Get(coap.ETag); ok && len(tag) > 0 {
			hdr.Set("ETag", formatETag(tag))
		}
		if resp.Code == coap.Content || resp.Code == coap.Valid {
			// §10.2.2: a max-age no greater than the freshness left;
			// CoAP's default Max-Age is 60 s (§5.10.5).
			age := uint32(60)
			if v, ok := resp.Options.Uint(coap.MaxAge); ok {
				age = v
			}
			hdr.Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(age), 10))
		}
		if resp.Code == coap.Created {
			if loc := location(h.cfg.Prefix, u, resp.Options); loc != "" {
				hdr.Set("Location", loc)
			}
		}
	default:
		// §6.6: a diagnostic payload is text/plain; note 7 asks 4.05
		// to say so, and Go cannot set a reason phrase.
		if resp.Code == coap.MethodNotAllowed {
			body = append([]byte("CoAP server returned 4.05 Method Not Allowed\n"), body...)
		}
		if len(body) > 0 {
			hdr.Set("Content-Type", "text/plain;charset=utf-8")
		}
		if v, ok := resp.Options.Uint(coap.MaxAge); ok {
			hdr.Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(v), 10))
			if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
				hdr.Set("Retry-After", strconv.FormatUint(uint64(v), 10)) // note 8
			}
		}
	}
	if status == http.StatusNotModified || status == http.StatusNoContent {
		body = nil
	}
	if len(body) > 0 {
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead && len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// location makes the Location header field of a 2.01 from Location-Path
// and Location-Query, as a Hosting HTTP URI under the prefix.
func location(prefix string, target *coap.URI, opts coap.Options) string {
	if !opts.Has(coap.LocationPath) && !opts.Has(coap.LocationQuery) {
		return ""
	}
	loc := coap.URI{Scheme: target.Scheme, Host: target.Host, Port: target.Port}
	for v := range opts.All(coap.LocationPath) {
		loc.Path = append(loc.Path, string(v))
	}
	for v := range opts.All(coap.LocationQuery) {
		loc.Query = append(loc.Query, string(v))
	}
	return prefix + loc.String()
}

// writeError maps a failure of the CoAP exchange (RFC 7252 §10.2: 504 when
// no result came in time, 502 when it could not be obtained).
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ce *coap.Error
	switch {
	case errors.As(err, &ce):
		h.writeResponse(w, r, nil, ce.Response(), exchange{})
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, coap.ErrTimeout):
		writeText(w, http.StatusGatewayTimeout, "no CoAP response in time")
	case errors.Is(err, coap.ErrBusy):
		writeText(w, http.StatusServiceUnavailable, "too many CoAP exchanges in flight")
	case errors.Is(err, context.Canceled):
		// The HTTP client went away; nobody reads this.
		writeText(w, http.StatusServiceUnavailable, "cancelled")
	default:
		h.log.Debug("coap exchange failed", "err", err)
		writeText(w, http.StatusBadGateway, "CoAP exchange failed")
	}
}

func (h *Handler) reject(w http.ResponseWriter, status int, msg string) {
	h.rejected.Add(1)
	writeText(w, status, msg)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain;charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}
