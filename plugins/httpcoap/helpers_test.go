package httpcoap

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// origin is a CoAP server on loopback whose answers a test scripts; it
// records every request it gets.
type origin struct {
	t    *testing.T
	ep   *coap.Endpoint
	addr netip.AddrPort

	mu   sync.Mutex
	reqs []*coap.Message // guarded by mu
}

func newOrigin(t *testing.T, answer func(ctx context.Context, req *coap.Message) *coap.Message) *origin {
	t.Helper()
	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{t: t, addr: u.LocalAddr()}
	o.ep = coap.NewEndpoint(u, coap.EndpointConfig{
		AckDelay: 50 * time.Millisecond,
		Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			o.mu.Lock()
			o.reqs = append(o.reqs, r.Msg.Clone())
			o.mu.Unlock()
			resp := answer(ctx, r.Msg)
			if resp == nil {
				return nil
			}
			return w.WriteResponse(resp)
		}),
	})
	t.Cleanup(func() { o.ep.Close() })
	return o
}

func (o *origin) last() *coap.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.reqs) == 0 {
		o.t.Fatal("origin got no request")
	}
	return o.reqs[len(o.reqs)-1]
}

func (o *origin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.reqs)
}

// clientDo is the DoFunc of the tests: a stand-in for the chain that
// splits Proxy-Uri into Uri-* as the route stage does (PR1.1) and sends
// the request to the origin, whatever host the URI names. It records the
// Proxy-Uri it saw.
type clientDo struct {
	ep       *coap.Endpoint
	to       netip.AddrPort
	mu       sync.Mutex
	proxyURI string // guarded by mu
}

func newClientDo(t *testing.T, to netip.AddrPort) *clientDo {
	t.Helper()
	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &clientDo{ep: coap.NewEndpoint(u, coap.EndpointConfig{Params: coap.Params{AckTimeout: 200 * time.Millisecond}}), to: to}
	t.Cleanup(func() { c.ep.Close() })
	return c
}

func (c *clientDo) do(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
	out := *req
	out.Options = append(coap.Options(nil), req.Options...)
	if pu, ok := out.Options.Get(coap.ProxyURI); ok {
		c.mu.Lock()
		c.proxyURI = string(pu)
		c.mu.Unlock()
		u, err := coap.ParseURI(string(pu))
		if err != nil {
			return nil, coap.Errorf(coap.BadOption, "%v", err)
		}
		out.Options = u.SetOptions(out.Options.Remove(coap.ProxyURI), u.Port)
	}
	return c.ep.Do(ctx, c.to, &out)
}

func (c *clientDo) lastProxyURI() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proxyURI
}

// curlResult is what curl reported.
type curlResult struct {
	status  int
	headers map[string]string // lower-case names, last value
	body    []byte
}

// curl runs the real curl against url. It fails the test when curl is not
// installed: scripts/test-deps.sh installs it.
func curl(t *testing.T, args ...string) curlResult {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl not installed (scripts/test-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	hdrFile, bodyFile := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
	// -g: no globbing, so [fd00::1] stays literal; --path-as-is: keep
	// the target URI's path exactly.
	full := append([]string{"-sS", "-g", "--path-as-is", "--max-time", "20", "-D", hdrFile, "-o", bodyFile}, args...)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	hb, err := os.ReadFile(hdrFile)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(bodyFile)
	r := curlResult{headers: map[string]string{}, body: body}
	for i, line := range strings.Split(strings.ReplaceAll(string(hb), "\r\n", "\n"), "\n") {
		if i == 0 {
			f := strings.Fields(line)
			if len(f) < 2 {
				t.Fatalf("curl status line %q", line)
			}
			for _, c := range f[1] {
				r.status = r.status*10 + int(c-'0')
			}
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			r.headers[strings.ToLower(k)] = strings.TrimSpace(v)
		}
	}
	return r
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// proxy wires origin ← clientDo ← Handler ← httptest server.
func proxy(t *testing.T, cfg Config, answer func(ctx context.Context, req *coap.Message) *coap.Message) (*origin, *clientDo, *Handler, string) {
	t.Helper()
	o := newOrigin(t, answer)
	c := newClientDo(t, o.addr)
	h, err := NewHandler(cfg, c.do)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return o, c, h, srv.URL
}

func optStrings(m *coap.Message, id coap.OptionID) []string {
	var s []string
	for v := range m.Options.All(id) {
		s = append(s, string(v))
	}
	return s
}

var _ = bytes.Equal

func newServer(t *testing.T, h *Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
