package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/bridge/bridgetest"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// origin is a CoAP server for the CLI tests: /temp, /store (PUT),
// /signed (a COSE_Sign1 representation), /obs (observable), anything else
// 4.04. With an OSCORE context it accepts only protected requests.
type origin struct {
	addr   netip.AddrPort
	osc    *oscore.Context
	signer *signed.Signer
	// tamper, when set, flips a byte of every protected or signed payload
	// the origin sends, as a proxy on the path could.
	tamper atomic.Bool

	mu     sync.Mutex
	stored []byte // guarded by mu
}

func startOrigin(t *testing.T, osc *oscore.Context, signer *signed.Signer) *origin {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{addr: u.LocalAddr(), osc: osc, signer: signer}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: coap.HandlerFunc(o.serve)})
	t.Cleanup(func() { e.Close() })
	return o
}

func (o *origin) uri(path string) string { return "coap://" + o.addr.String() + path }

func (o *origin) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	req := r.Msg
	var ex *oscore.Exchange
	if o.osc != nil {
		var err error
		req, ex, err = o.osc.UnprotectRequest(r.Msg)
		if err != nil {
			if e, ok := oscore.ErrorResponse(r.Msg, err); ok {
				return w.WriteResponse(e)
			}
			return coap.Errorf(coap.BadRequest, "%v", err)
		}
	}
	resp := o.answer(req)
	if resp.Options.Has(coap.Observe) {
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		defer func() {
			go o.notify(nw, ex, 2)
		}()
	}
	return w.WriteResponse(o.seal(ex, resp))
}

func (o *origin) seal(ex *oscore.Exchange, resp *coap.Message) *coap.Message {
	if ex != nil {
		p, err := ex.ProtectResponse(resp)
		if err != nil {
			panic(err)
		}
		resp = p
	}
	if o.tamper.Load() && len(resp.Payload) > 0 {
		resp.Payload[len(resp.Payload)-1] ^= 0x01
	}
	return resp
}

// notify sends n notifications after the first response.
func (o *origin) notify(w coap.NotifyWriter, ex *oscore.Exchange, n int) {
	for i := 1; i <= n; i++ {
		time.Sleep(20 * time.Millisecond)
		m := &coap.Message{Code: coap.Content, Payload: []byte("n" + string(rune('0'+i)))}
		m.Options = m.Options.SetUint(coap.Observe, uint32(i)).SetUint(coap.ContentFormat, 0)
		w.Notify(o.seal(ex, m), true, nil)
	}
}

func (o *origin) answer(req *coap.Message) *coap.Message {
	path := "/" + strings.Join(coap.URIFromOptions(req.Options, "", "", 0).Path, "/")
	text := func(s string) *coap.Message {
		m := &coap.Message{Code: coap.Content, Payload: []byte(s)}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0)
		return m
	}
	switch {
	case path == "/":
		// What an origin without OSCORE sees of a protected request: no
		// path, it is encrypted.
		return text("root")
	case path == "/temp" && req.Code == coap.GET:
		return text("21.5")
	case path == "/store" && req.Code == coap.PUT:
		o.mu.Lock()
		o.stored = bytes.Clone(req.Payload)
		o.mu.Unlock()
		return &coap.Message{Code: coap.Changed}
	case path == "/store" && req.Code == coap.GET:
		o.mu.Lock()
		defer o.mu.Unlock()
		return text(string(o.stored))
	case path == "/signed" && req.Code == coap.GET:
		rep, err := o.signer.Sign(o.uri("/signed"), 0, []byte("22.0"))
		if err != nil {
			panic(err)
		}
		m := &coap.Message{Code: coap.Content, Payload: rep}
		m.Options = m.Options.SetUint(coap.ContentFormat, uint32(signed.ContentFormatCOSESign1))
		return m
	case path == "/obs" && req.Code == coap.GET:
		m := text("n0")
		if _, ok := req.Options.Uint(coap.Observe); ok {
			m.Options = m.Options.SetUint(coap.Observe, 0)
		}
		return m
	}
	return &coap.Message{Code: coap.NotFound, Payload: []byte("no such resource")}
}

func startProxy(t *testing.T) string {
	t.Helper()
	p := bridgetest.Start(t, func(c *bridge.Config) { c.Proxy.Name = "gw-ctl-test" })
	return "coap://" + p.Addrs()[0].String()
}

// oscorePair makes a client and server context with gatewayctl keys and
// returns the client file and the server context.
func oscorePair(t *testing.T) (string, *oscore.Context) {
	t.Helper()
	dir := t.TempDir()
	client := filepath.Join(dir, "client.toml")
	if code, _, stderr := ctl(t, "keys", "oscore", "-out", client); code != 0 {
		t.Fatalf("keys oscore: exit %d: %s", code, stderr)
	}
	cfg, err := oscore.ReadConfig(filepath.Join(dir, "client.peer.toml"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := oscore.NewContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client, srv
}

func ctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return ctlCtx(t, context.Background(), args...)
}

func ctlCtx(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(ctx, args, &o, &e)
	return code, o.String(), e.String()
}

func TestGetAndPutDirectAndThroughProxyWithAndWithoutOSCORE(t *testing.T) {
	proxy := startProxy(t)
	for _, protected := range []bool{false, true} {
		for _, via := range []string{"direct", "proxy"} {
			name := via
			if protected {
				name += "/oscore"
			}
			t.Run(name, func(t *testing.T) {
				var flags []string
				var srv *oscore.Context
				if protected {
					var file string
					file, srv = oscorePair(t)
					flags = append(flags, "-oscore", file)
				}
				if via == "proxy" {
					flags = append(flags, "-proxy", proxy)
				}
				o := startOrigin(t, srv, nil)
				code, out, stderr := ctl(t, append([]string{"get"}, append(flags, o.uri("/temp"))...)...)
				if code != exitOK || out != "21.5\n" {
					t.Fatalf("get: exit %d, stdout %q, stderr %q", code, out, stderr)
				}
				code, out, stderr = ctl(t, append([]string{"put", "-e", "on"}, append(flags, o.uri("/store"))...)...)
				if code != exitOK || out != "" {
					t.Fatalf("put: exit %d, stdout %q, stderr %q", code, out, stderr)
				}
				// A second run with the same context file must not reuse
				// a sequence number, or the origin would answer 4.01.
				code, out, stderr = ctl(t, append([]string{"get"}, append(flags, o.uri("/store"))...)...)
				if code != exitOK || out != "on\n" {
					t.Fatalf("get after put: exit %d, stdout %q, stderr %q", code, out, stderr)
				}
			})
		}
	}
}

func TestOSCOREClientRejectsUnprotectedOriginWithExit3(t *testing.T) {
	file, _ := oscorePair(t)
	o := startOrigin(t, nil, nil) // answers in the clear
	code, out, stderr := ctl(t, "get", "-oscore", file, o.uri("/temp"))
	if code != exitVerify || out != "" || !strings.Contains(stderr, "without OSCORE protection") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func newSigner(t *testing.T) (*signed.Signer, string) {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), "node")
	if code, _, stderr := ctl(t, "keys", "ed25519", "-out", prefix); code != 0 {
		t.Fatalf("keys ed25519: exit %d: %s", code, stderr)
	}
	key, err := signed.ReadPrivateKeyFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	kid, err := signed.KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s, err := signed.NewSigner(signed.SignerConfig{Key: key, KID: kid})
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix + ".pub"
}

func TestVerifySignedRepresentationDirectAndThroughProxy(t *testing.T) {
	s, pub := newSigner(t)
	o := startOrigin(t, nil, s)
	proxy := startProxy(t)
	for _, flags := range [][]string{nil, {"-proxy", proxy}} {
		args := append(append([]string{"get", "-verify", pub}, flags...), o.uri("/signed"))
		code, out, stderr := ctl(t, args...)
		if code != exitOK || out != "22.0\n" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", flags, code, out, stderr)
		}
	}
	// The same representation does not verify for another resource or
	// content format.
	code, _, stderr := ctl(t, "get", "-verify", pub, "-cf", "50", o.uri("/signed"))
	if code != exitVerify || !strings.Contains(stderr, "wrong content format") {
		t.Fatalf("-cf 50: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = ctl(t, "get", "-verify", pub, o.uri("/temp"))
	if code != exitVerify || !strings.Contains(stderr, "Content-Format is 0") {
		t.Fatalf("unsigned resource: exit %d, stderr %q", code, stderr)
	}
}

func TestTamperedResponseExitsThree(t *testing.T) {
	s, pub := newSigner(t)
	file, srv := oscorePair(t)
	cases := map[string]struct {
		o    *origin
		args []string
		want string
	}{
		"signature": {startOrigin(t, nil, s), []string{"-verify", pub}, "bad signature"},
		"oscore":    {startOrigin(t, srv, nil), []string{"-oscore", file}, "decryption failed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			c.o.tamper.Store(true)
			path := "/temp"
			if name == "signature" {
				path = "/signed"
			}
			code, out, stderr := ctl(t, append(append([]string{"get"}, c.args...), c.o.uri(path))...)
			if code != exitVerify || out != "" || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
		})
	}
}

func TestObservePrintsFirstResponseAndTwoNotifications(t *testing.T) {
	for _, protected := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "oscore"}[protected], func(t *testing.T) {
			var flags []string
			var srv *oscore.Context
			if protected {
				var file string
				file, srv = oscorePair(t)
				flags = []string{"-oscore", file}
			}
			o := startOrigin(t, srv, nil)
			args := append(append([]string{"observe", "-n", "3"}, flags...), o.uri("/obs"))
			code, out, stderr := ctl(t, args...)
			if code != exitOK || out != "n0\nn1\nn2\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
		})
	}
}

func TestObserveStopsCleanlyWhenInterrupted(t *testing.T) {
	o := startOrigin(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	code, out, stderr := ctlCtx(t, ctx, "observe", o.uri("/obs"))
	if code != exitOK || !strings.HasPrefix(out, "n0\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestNotFoundExitsOneWithCodeAndDiagnostic(t *testing.T) {
	o := startOrigin(t, nil, nil)
	for _, flags := range [][]string{nil, {"-proxy", startProxy(t)}} {
		code, out, stderr := ctl(t, append(append([]string{"get"}, flags...), o.uri("/nothing"))...)
		if code != exitResponse || out != "" || !strings.Contains(stderr, "4.04 NotFound: no such resource") {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", flags, code, out, stderr)
		}
	}
}

func TestUnreachableServerExitsFour(t *testing.T) {
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := u.LocalAddr()
	defer u.Close()
	code, _, stderr := ctl(t, "get", "-timeout", "200ms", "coap://"+silent.String()+"/x")
	if code != exitNetwork || !strings.Contains(stderr, "no response") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.toml")
	if err := os.WriteFile(loose, []byte("master_secret = \"00\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"no command":           nil,
		"unknown command":      {"fetch", "coap://127.0.0.1/x"},
		"no URI":               {"get"},
		"two URIs":             {"get", "coap://127.0.0.1/a", "coap://127.0.0.1/b"},
		"bad URI":              {"get", "not a uri"},
		"coaps":                {"get", "coaps://127.0.0.1/x"},
		"unknown flag":         {"get", "-bogus", "coap://127.0.0.1/x"},
		"payload on get":       {"get", "-e", "x", "coap://127.0.0.1/x"},
		"bad content format":   {"put", "-cf", "x", "coap://127.0.0.1/x"},
		"missing context file": {"get", "-oscore", filepath.Join(dir, "none.toml"), "coap://127.0.0.1/x"},
		"readable context":     {"get", "-oscore", loose, "coap://127.0.0.1/x"},
		"missing key file":     {"get", "-verify", filepath.Join(dir, "none.pub"), "coap://127.0.0.1/x"},
		"keys without type":    {"keys"},
		"keys without -out":    {"keys", "ed25519"},
		"keys unknown type":    {"keys", "rsa", "-out", filepath.Join(dir, "k")},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := ctl(t, args...)
			if code != exitUsage || stderr == "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"get", "-h"}, {"observe", "-h"}, {"keys", "-h"}, {"keys", "oscore", "-h"}} {
		if code, _, _ := ctl(t, args...); code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	_, out, _ := ctl(t, "-h")
	for _, want := range []string{"Exit codes", "keys oscore", "-verify", "-proxy"} {
		if !strings.Contains(out, want) {
			t.Errorf("top-level help lacks %q", want)
		}
	}
}

func TestKeysWritesFilesWithSafeModesAndNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "sig")
	code, out, stderr := ctl(t, "keys", "ed25519", "-out", prefix)
	if code != exitOK || !strings.Contains(out, "kid") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	ctx := filepath.Join(dir, "node7.toml")
	if code, _, stderr := ctl(t, "keys", "oscore", "-out", ctx, "-client-id", "0a", "-server-id", "01"); code != exitOK {
		t.Fatalf("keys oscore: exit %d: %s", code, stderr)
	}
	modes := map[string]os.FileMode{
		prefix + ".key": 0o600, prefix + ".pub": 0o644,
		ctx: 0o600, filepath.Join(dir, "node7.peer.toml"): 0o600,
	}
	for p, want := range modes {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	key, err := signed.ReadPrivateKeyFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signed.ReadPublicKeyFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("public key file does not match the private key")
	}
	c, err := oscore.ReadConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := oscore.ReadConfig(filepath.Join(dir, "node7.peer.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.MasterSecret, s.MasterSecret) || len(c.MasterSecret) != 32 ||
		!bytes.Equal(c.SenderID, []byte{0x0a}) || !bytes.Equal(s.RecipientID, []byte{0x0a}) ||
		!bytes.Equal(c.RecipientID, []byte{0x01}) || c.SeqStore == nil || s.SeqStore == nil {
		t.Fatalf("contexts do not match: %+v / %+v", c.Params, s.Params)
	}
	// Never overwrite a key.
	for _, args := range [][]string{{"keys", "ed25519", "-out", prefix}, {"keys", "oscore", "-out", ctx}} {
		if code, _, stderr := ctl(t, args...); code != exitUsage || !strings.Contains(stderr, "exists") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	// Two generations differ.
	other := filepath.Join(dir, "other.toml")
	if code, _, _ := ctl(t, "keys", "oscore", "-out", other); code != exitOK {
		t.Fatal("second keys oscore failed")
	}
	o, _ := oscore.ReadConfig(other)
	if bytes.Equal(o.MasterSecret, c.MasterSecret) {
		t.Fatal("master secret repeated")
	}
}

func TestStatusShowsTheProxyAtAGlance(t *testing.T) {
	p := bridgetest.Start(t, func(c *bridge.Config) {
		c.Route = []bridge.RouteConfig{{Name: "hall", Target: "coap://[fd00::1]"}}
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
		c.Plugin = []plugins.Config{{Name: "http", Path: filepath.Join(t.TempDir(), "gatewayd-http"), SHA256: strings.Repeat("ab", 32)}}
	}, bridge.WithVersion("1.2.3"))
	addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "-admin", addr}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"gatewayd 1.2.3 (" + runtime.Version() + "), up ",
		"listen   udp://127.0.0.1:0 on " + p.Addrs()[0].String() + ": received ",
		"route    /hall → coap://[fd00::1]",
		"radio    sim (sim, " + sim.DefaultPrefix.String() + "): ",
		"plugin   http (", "): DOWN, next start ", "no such file",
		"cache    0 entries", "observe  0 observers",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	if code := run(context.Background(), []string{"status", "-admin", "127.0.0.1:1"}, &out, &errb); code != exitNetwork {
		t.Fatalf("no gatewayd: exit %d, want %d", code, exitNetwork)
	}
}

// With [metrics] token_file, status needs -token-file, and works with it.
func TestStatusSendsTheAdminToken(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte("c2VjcmV0LXRva2VuLTAxMjM0NTY3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := bridgetest.Start(t, func(c *bridge.Config) { c.Metrics.TokenFile = tok }, bridge.WithVersion("1.2.3"))
	addr, err := p.ServeAdmin(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "-admin", addr}, &out, &errb); code != exitNetwork || !strings.Contains(errb.String(), "-token-file") {
		t.Errorf("without the token: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"status", "-admin", addr, "-token-file", tok}, &out, &errb); code != exitOK {
		t.Fatalf("with the token: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "gatewayd 1.2.3 (") {
		t.Errorf("status with the token:\n%s", out.String())
	}
}

func TestVersionFlag(t *testing.T) {
	version = "1.2.3+test"
	defer func() { version = "" }()
	for _, arg := range []string{"-version", "--version", "version"} {
		var out bytes.Buffer
		if code := run(context.Background(), []string{arg}, &out, &bytes.Buffer{}); code != exitOK || out.String() != "gatewayctl 1.2.3+test\n" {
			t.Errorf("%s: exit %d, %q", arg, code, out.String())
		}
	}
}
