package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
)

// requestFlags are the flags every request command takes.
type requestFlags struct {
	proxy   string
	oscore  string
	verify  string
	payload string
	cf      int
	timeout time.Duration
	count   int // observe only
	verbose bool
}

var methods = map[string]coap.Code{
	"get": coap.GET, "put": coap.PUT, "post": coap.POST, "delete": coap.DELETE, "observe": coap.GET,
}

const requestUsage = `Usage: gatewayctl %[1]s [flags] URI

%[2]s

URI is coap://host[:port]/path[?query]. The response payload goes to stdout;
with -v the response code and Content-Format go to stderr.

Flags:
`

var requestHelp = map[string]string{
	"get":     "Sends a GET and prints the representation.",
	"put":     "Sends a PUT with the -e payload and prints the response payload, if any.",
	"post":    "Sends a POST with the -e payload and prints the response payload, if any.",
	"delete":  "Sends a DELETE.",
	"observe": "Registers an observation (RFC 7641) and prints the first response and each\nnotification on its own line, until -n responses arrived or it is interrupted\n(an interrupt exits 0). With -oscore or -verify every notification is\nverified; a reordered or replayed one is skipped with a warning, anything\nthat fails verification otherwise ends the command with exit code 3.",
}

func runRequest(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	var f requestFlags
	fs := flag.NewFlagSet("gatewayctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), requestUsage, cmd, requestHelp[cmd])
		fs.PrintDefaults()
	}
	fs.StringVar(&f.proxy, "proxy", "", "send through the CoAP proxy at `URI` (coap://host:port) with a Proxy-Uri option")
	fs.StringVar(&f.oscore, "oscore", "", "OSCORE security context `file` (gatewayctl keys oscore): protect the request, verify the response")
	fs.StringVar(&f.verify, "verify", "", "public key `file` (gatewayctl keys ed25519): the response must be a COSE_Sign1 representation\nsigned with it for this URI and -cf; its payload is printed")
	fs.StringVar(&f.payload, "e", "", "request `payload`")
	f.cf = -1
	fs.Func("cf", "Content-Format `number` of the -e payload (default 0); with -verify, the Content-Format\nthe signed representation must declare (default 0)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return fmt.Errorf("want a Content-Format number 0 to 65535")
		}
		f.cf = int(n)
		return nil
	})
	fs.DurationVar(&f.timeout, "timeout", 15*time.Second, "how long to wait for a response (for observe: for the first one)")
	fs.BoolVar(&f.verbose, "v", false, "print the response code and Content-Format to stderr")
	if cmd == "observe" {
		fs.IntVar(&f.count, "n", 0, "stop after this many responses, the first included (0: until interrupted)")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageErr("%s: want exactly one URI, got %d arguments", cmd, fs.NArg())
	}
	if f.count < 0 {
		return usageErr("-n %d: want 0 or more", f.count)
	}
	if f.payload != "" && (cmd == "get" || cmd == "delete" || cmd == "observe") {
		return usageErr("-e: %s sends no payload", cmd)
	}
	c, err := newClient(ctx, fs.Arg(0), &f)
	if err != nil {
		return err
	}
	c.stderr = stderr
	defer c.close()
	req := &coap.Message{Code: methods[cmd], Options: c.options()}
	if f.payload != "" {
		req.Payload = []byte(f.payload)
		req.Options = req.Options.SetUint(coap.ContentFormat, uint32(max(f.cf, 0)))
	}
	if cmd == "observe" {
		return c.observe(ctx, req, f.count, stdout, stderr)
	}
	tctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	resp, err := c.do(tctx, req)
	if err != nil {
		return err
	}
	return c.print(resp, stdout, stderr)
}

// client is one configured request: where to send, how to protect, how to
// verify.
type client struct {
	f      *requestFlags
	target *coap.URI
	dst    netip.AddrPort
	ep     *coap.Endpoint
	osc    *oscore.Context
	ver    *signed.Verifier
	ex     *oscore.Exchange // the exchange of the request sent last
	stderr io.Writer
}

func newClient(ctx context.Context, rawURI string, f *requestFlags) (*client, error) {
	u, err := coap.ParseURI(rawURI)
	if err != nil {
		return nil, usageErr("%w", err)
	}
	if u.Scheme != "coap" {
		return nil, usageErr("%s: only coap:// is supported (for coaps, use a gatewayd with DTLS towards the node)", rawURI)
	}
	c := &client{f: f, target: u}
	if f.oscore != "" {
		cfg, err := oscore.ReadConfig(f.oscore)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("-oscore: %w", err))
		}
		if cfg.SeqStore == nil {
			// Without a stored sequence number every run would reuse
			// Partial IV 0: the server rejects it as a replay, and the
			// nonce would repeat under one key.
			return nil, usageErr("-oscore: %s has no sequence_file; gatewayctl needs one to never reuse a sequence number", f.oscore)
		}
		if c.osc, err = oscore.NewContext(cfg); err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("-oscore: %w", err))
		}
	}
	if f.verify != "" {
		pub, err := signed.ReadPublicKeyFile(f.verify)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("-verify: %w", err))
		}
		kid, err := signed.KeyID(pub)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("-verify: %w", err))
		}
		c.ver = signed.NewVerifier(signed.VerifierConfig{})
		if err := c.ver.AddKey(kid, pub); err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("-verify: %w", err))
		}
	}
	hop := u
	if f.proxy != "" {
		if hop, err = coap.ParseURI(f.proxy); err != nil {
			return nil, usageErr("-proxy: %w", err)
		}
		if hop.Scheme != "coap" {
			return nil, usageErr("-proxy %s: only coap:// proxies are supported", f.proxy)
		}
	}
	if c.dst, err = resolve(ctx, hop); err != nil {
		return nil, err
	}
	listen := "0.0.0.0:0"
	if c.dst.Addr().Is6() {
		listen = "[::]:0"
	}
	t, err := coap.ListenUDP(ctx, listen)
	if err != nil {
		return nil, withCode(exitNetwork, err)
	}
	c.ep = coap.NewEndpoint(t, coap.EndpointConfig{})
	return c, nil
}

func (c *client) close() { c.ep.Close() }

func resolve(ctx context.Context, u *coap.URI) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(u.Host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), u.Port), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Host)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, withCode(exitNetwork, fmt.Errorf("cannot resolve %q: %w", u.Host, err))
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), u.Port), nil
}

// options are the request's URI options: a Proxy-Uri for a proxy (PR1.1),
// else Uri-Host (for a name), Uri-Port (when not the port sent to), Uri-Path
// and Uri-Query (RFC 7252 §6.4).
func (c *client) options() coap.Options {
	if c.f.proxy != "" {
		return coap.Options(nil).Insert(coap.ProxyURI, []byte(c.target.String()))
	}
	return c.target.SetOptions(nil, c.dst.Port())
}

// protect applies OSCORE when configured.
func (c *client) protect(req *coap.Message) (*coap.Message, error) {
	if c.osc == nil {
		return req, nil
	}
	p, ex, err := c.osc.ProtectRequest(req)
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("oscore: %w", err))
	}
	c.ex = ex
	return p, nil
}

func (c *client) do(ctx context.Context, req *coap.Message) (*coap.Message, error) {
	p, err := c.protect(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.ep.Do(ctx, c.dst, p)
	if err != nil {
		return nil, netError(err)
	}
	return resp, nil
}

func netError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, coap.ErrTimeout):
		return withCode(exitNetwork, fmt.Errorf("no response: %w", err))
	case errors.Is(err, context.Canceled):
		return nil
	}
	return withCode(exitNetwork, err)
}

// open undoes OSCORE on a response. An unprotected error response is
// passed on as it is: §8.2 lets a server answer a request it cannot verify
// that way, and any proxy may answer so too.
func (c *client) open(resp *coap.Message) (*coap.Message, bool, error) {
	if c.osc == nil {
		return resp, false, nil
	}
	if !resp.Options.Has(coap.OSCORE) {
		if resp.Code.Class() >= 4 {
			return resp, false, nil
		}
		return nil, false, withCode(exitVerify, fmt.Errorf("oscore: %v response without OSCORE protection", resp.Code))
	}
	m, err := c.ex.UnprotectResponse(resp)
	if err != nil {
		return nil, false, withCode(exitVerify, err)
	}
	return m, true, nil
}

// representation verifies a signed representation against the request's
// URI and -cf, and returns its payload.
func (c *client) representation(m *coap.Message) ([]byte, error) {
	if c.ver == nil {
		return m.Payload, nil
	}
	if cf, ok := m.Options.Uint(coap.ContentFormat); !ok || uint16(cf) != signed.ContentFormatCOSESign1 {
		return nil, withCode(exitVerify, fmt.Errorf("signed: response Content-Format is %s, want %d (COSE_Sign1)", cfString(m), signed.ContentFormatCOSESign1))
	}
	payload, meta, err := c.ver.Verify(m.Payload, signed.Expectation{
		URI:           c.target.String(),
		ContentFormat: uint16(max(c.f.cf, 0)),
	})
	if err != nil {
		return nil, withCode(exitVerify, err)
	}
	if c.f.verbose {
		fmt.Fprintf(c.stderr, "signed by kid %x, counter %d, at %v\n", meta.KID, meta.Counter, meta.Time.UTC().Format(time.RFC3339))
	}
	return payload, nil
}

func cfString(m *coap.Message) string {
	if cf, ok := m.Options.Uint(coap.ContentFormat); ok {
		return fmt.Sprint(cf)
	}
	return "absent"
}

// print handles one final response: error codes exit 1, success payloads
// go to stdout after verification.
func (c *client) print(resp *coap.Message, stdout, stderr io.Writer) error {
	m, protected, err := c.open(resp)
	if err != nil {
		return err
	}
	if c.f.verbose {
		fmt.Fprintf(stderr, "%v Content-Format=%s oscore=%v\n", m.Code, cfString(m), protected)
	}
	if m.Code.Class() != 2 {
		return responseError(m, protected, c.osc != nil)
	}
	payload, err := c.representation(m)
	if err != nil {
		return err
	}
	writePayload(stdout, payload)
	return nil
}

func responseError(m *coap.Message, protected, wantProtected bool) error {
	msg := fmt.Sprintf("%d.%02d %s", m.Code.Class(), m.Code.Detail(), codeName(m.Code))
	if len(m.Payload) > 0 {
		msg += ": " + string(m.Payload)
	}
	if wantProtected && !protected {
		msg += " (unprotected: the server or any proxy on the path may have sent it)"
	}
	return withCode(exitResponse, errors.New(msg))
}

// codeName is the name part of coap.Code's String, "NotFound" for 4.04.
func codeName(code coap.Code) string {
	s := code.String()
	for i := range len(s) {
		if s[i] == '(' {
			return s[:i]
		}
	}
	return ""
}

func writePayload(w io.Writer, p []byte) {
	if len(p) == 0 {
		return
	}
	w.Write(p)
	if p[len(p)-1] != '\n' {
		io.WriteString(w, "\n")
	}
}

// observe registers an observation and prints responses until count is
// reached, ctx ends, or the observation ends.
func (c *client) observe(ctx context.Context, req *coap.Message, count int, stdout, stderr io.Writer) error {
	req.Options = req.Options.SetUint(coap.Observe, 0)
	p, err := c.protect(req)
	if err != nil {
		return err
	}
	// The endpoint calls notify on its reader goroutine, which must not
	// block: hand notifications over through a buffer and count what
	// overflows.
	notes := make(chan *coap.Message, 64)
	var dropped atomic.Int64
	tctx, cancel := context.WithTimeout(ctx, c.f.timeout)
	first, obs, err := c.ep.Observe(tctx, c.dst, p, func(m *coap.Message) {
		select {
		case notes <- m:
		default:
			dropped.Add(1)
		}
	})
	cancel()
	if err != nil {
		return netError(err)
	}
	if obs != nil {
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			obs.Cancel(cctx) // best effort: the server also forgets us on RST
		}()
	}
	defer func() {
		if n := dropped.Load(); n > 0 {
			fmt.Fprintf(stderr, "gatewayctl: warning: %d notifications arrived faster than they could be printed and were dropped\n", n)
		}
	}()
	seen := 0
	show := func(m *coap.Message) (bool, error) {
		open, _, err := c.open(m)
		if err != nil {
			if errors.Is(err, oscore.ErrReplay) {
				fmt.Fprintln(stderr, "gatewayctl: warning: skipped a replayed or reordered notification:", err)
				return false, nil
			}
			return false, err
		}
		if open.Code.Class() != 2 {
			return false, responseError(open, m.Options.Has(coap.OSCORE), c.osc != nil)
		}
		payload, err := c.representation(open)
		if errors.Is(err, signed.ErrStale) {
			fmt.Fprintln(stderr, "gatewayctl: warning: skipped a stale notification:", err)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if c.f.verbose {
			fmt.Fprintf(stderr, "%v Content-Format=%s\n", open.Code, cfString(open))
		}
		writePayload(stdout, payload)
		seen++
		// A response without Observe ends the observation (RFC 7641 §3.2).
		return !open.Options.Has(coap.Observe) || count > 0 && seen >= count, nil
	}
	done, err := show(first)
	if err != nil || done {
		return err
	}
	if obs == nil {
		fmt.Fprintln(stderr, "gatewayctl: the server did not register the observation")
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil // interrupted: a clean stop
		case m := <-notes:
			if done, err := show(m); err != nil || done {
				return err
			}
		}
	}
}
