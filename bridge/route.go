package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins"
)

// router picks the target of a forwarded request, rewrites its options as
// PR1.1/PR1.2 allow, sends it upstream and writes the response back as it
// came (PR1.3).
type router struct {
	name    string
	timeout time.Duration
	allow   []netip.Prefix
	routes  map[string]*coap.URI
	nextHop netip.AddrPort // valid when a next-hop proxy is configured
	up      Upstream       // IP
	radios  []*radioUpstream
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	latency [numTransports]prometheus.Observer // upstream exchange time by transport; nil entries record nothing
	uris    uriCache                           // Proxy-Uri values lately parsed
	// translator finds the plugin for a scheme other than coap.
	translator func(scheme string) (*plugins.Translator, bool)
	// streams and dtls reach coap+tcp, coaps+tcp, coap+ws, coaps+ws and
	// coaps origins; creds are the [[origin]] credentials, by
	// originURIKey.
	streams *streamOrigins
	dtls    *dtlsOrigins
	creds   map[string]*originCreds
	// dyn are the routes made at run time: the resource directory's
	// registrations. nil without one.
	dyn dynRoutes
}

// dynRoutes are reverse routes that come and go while the proxy runs
// (rd.Directory): by the first Uri-Path, as [[route]] names are, and by
// Uri-Host.
type dynRoutes interface {
	Route(name string) (*coap.URI, bool)
	HostRoute(host string) (*coap.URI, bool)
	Domain() string
}

// lookupHost resolves reg-name hosts of Proxy-Uri and Uri-Host.
var lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

func newRouter(cfg Config, up Upstream, radios []*radioUpstream, streams *streamOrigins, dtls *dtlsOrigins) (*router, error) {
	allow, err := parsePrefixes(cfg.Proxy.Allow)
	if err != nil {
		return nil, fmt.Errorf("bridge: allow: %w", err)
	}
	creds, err := loadOrigins(cfg.Origin)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	r := &router{
		name:       cfg.Proxy.Name,
		timeout:    cfg.Proxy.Timeout.Duration,
		allow:      allow,
		routes:     map[string]*coap.URI{},
		up:         up,
		radios:     radios,
		lookup:     lookupHost,
		translator: func(string) (*plugins.Translator, bool) { return nil, false },
		streams:    streams,
		dtls:       dtls,
		creds:      creds,
	}
	for _, rc := range cfg.Route {
		u, err := coap.ParseURI(rc.Target)
		if err != nil {
			return nil, fmt.Errorf("bridge: route %q: %w", rc.Name, err)
		}
		r.routes[rc.Name] = u
	}
	if cfg.Proxy.NextHop != "" {
		u, err := coap.ParseURI(cfg.Proxy.NextHop)
		if err != nil {
			return nil, fmt.Errorf("bridge: next_hop: %w", err)
		}
		r.nextHop = netip.AddrPortFrom(netip.MustParseAddr(u.Host), u.Port)
	}
	return r, nil
}

// route returns the reverse route a request names: by its Uri-Host, a
// registered endpoint's "<ep>.<domain>" (byHost); else by its first
// Uri-Path, a [[route]] name or, after those, a registered endpoint's.
func (r *router) route(m *coap.Message) (u *coap.URI, byHost bool) {
	if len(r.routes) == 0 && r.dyn == nil || isForward(m) {
		return nil, false
	}
	if r.dyn != nil && r.dyn.Domain() != "" {
		if h, ok := m.Options.Get(coap.URIHost); ok {
			// Uri-Host compares as RFC 7252 §6.4 makes it: lower case.
			if u, ok := r.dyn.HostRoute(strings.ToLower(string(h))); ok {
				return u, true
			}
		}
	}
	first, ok := m.Options.Get(coap.URIPath)
	if !ok {
		return nil, false
	}
	if u := r.routes[string(first)]; u != nil {
		return u, false
	}
	if r.dyn != nil {
		if u, ok := r.dyn.Route(string(first)); ok {
			return u, false
		}
	}
	return nil, false
}

// configuredRoute is the [[route]] a request names, nil when it names
// none or a registered endpoint: only a configured route may name a
// group, never a name a registrant chose.
func (r *router) configuredRoute(m *coap.Message) *coap.URI {
	u, byHost := r.route(m)
	if u == nil || byHost {
		return nil
	}
	first, _ := m.Options.Get(coap.URIPath)
	if r.routes[string(first)] != u {
		return nil
	}
	return u
}

// forwards reports whether the request leaves the proxy.
func (r *router) forwards(m *coap.Message) bool {
	if isForward(m) {
		return true
	}
	u, _ := r.route(m)
	return u != nil
}

func (r *router) stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		if !r.forwards(req.Msg) {
			return next.ServeCoAP(ctx, w, req)
		}
		// §5.7.1: an unsafe option the proxy does not know cannot be
		// forwarded: 4.02.
		for _, o := range req.Msg.Options {
			if o.ID.Unsafe() && !o.ID.Known() {
				return coap.Errorf(coap.BadOption, "unknown unsafe option %d", o.ID)
			}
		}
		if coap.Inline(ctx) {
			return r.later(ctx, w, req)
		}
		return r.exchange(ctx, w, req)
	})
}

// asyncUpstream is an Upstream that can send without a waiting goroutine.
type asyncUpstream interface {
	Go(target netip.AddrPort, req *coap.Message, timeout time.Duration, done func(*coap.Message, error))
}

// errWouldBlock is target's answer, on an endpoint's reader, for a request
// whose target needs a name resolved.
var errWouldBlock = errors.New("bridge: target needs a name lookup")

// later forwards a request whose handler runs on the endpoint's reader
// (coap.Inline), which must not block. To an IP target named by its
// address, the exchange runs without a goroutine of its own (coap.Later,
// Endpoint.Go) and the answer is written from the upstream's reader.
// Anything that may block (a name to resolve, a radio, a plugin) takes
// the path of exchange, on a goroutine of its own.
func (r *router) later(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
	dst, out, tr, err := r.target(ctx, req.Msg)
	up, async := r.up.(asyncUpstream)
	if errors.Is(err, errWouldBlock) || err == nil && (tr != nil || r.radioFor(dst.Addr()) != nil || !async) {
		dctx := coap.Detached(ctx)
		return coap.Later(ctx, func() {
			go func() { coap.Finish(w, r.exchange(dctx, w, req)) }()
		})
	}
	if err != nil {
		return err
	}
	if err := r.verify(req, out); err != nil {
		return err
	}
	start := time.Now()
	return coap.Later(ctx, func() {
		up.Go(dst, out, r.timeout, func(resp *coap.Message, err error) {
			r.recordLatency(transportIP, start)
			coap.Finish(w, r.answer(w, resp, err))
		})
	})
}

// verify fails closed: a protected message that this proxy changed beyond
// what it may is never sent (the guard, PR1.1-PR1.3).
func (r *router) verify(req *coap.Request, out *coap.Message) error {
	if req.Sealed != nil {
		if err := Verify(req.Sealed, out); err != nil {
			return &coap.Error{Code: coap.InternalServerError, MaxAge: -1, Err: err}
		}
	}
	return nil
}

// transport is the kind of upstream an exchange took: the label of
// gatewayd_upstream_duration_seconds.
type transport uint8

const (
	transportIP transport = iota
	transportRadio
	transportPlugin
	numTransports
)

var transportNames = [numTransports]string{"ip", "radio", "plugin"}

// recordLatency records an upstream exchange's time.
func (r *router) recordLatency(t transport, start time.Time) {
	if o := r.latency[t]; o != nil {
		o.Observe(time.Since(start).Seconds())
	}
}

// answer writes an upstream's response back as it came (PR1.3), or
// returns the error the client gets. The response is the router's own, a
// message no one else holds: it is handed over (coap.WriteOwned).
func (r *router) answer(w coap.ResponseWriter, resp *coap.Message, err error) error {
	if err != nil {
		return upstreamError(err)
	}
	if resp.Code == coap.HopLimitReached {
		var ok bool
		if resp, ok = relay58(resp, r.name); !ok {
			return &coap.Error{Code: coap.HopLimitReached, Diagnostic: r.name, MaxAge: -1}
		}
	}
	return coap.WriteOwned(w, resp)
}

// exchange forwards a request and waits for the answer.
func (r *router) exchange(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
	// The timeout bounds the whole exchange, name resolution included.
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	dst, out, tr, err := r.target(ctx, req.Msg)
	if err != nil {
		return err
	}
	if err := r.verify(req, out); err != nil {
		return err
	}
	var up Upstream = r.upstream(dst.Addr())
	if tr != nil {
		up = tr
	}
	start := time.Now()
	var resp *coap.Message
	if obs := req.Observer; obs != nil {
		var stop func(context.Context) error
		resp, stop, err = up.Observe(ctx, dst, out, obs.Notify)
		if stop != nil {
			obs.Started(stop)
		}
	} else {
		resp, err = up.RoundTrip(ctx, dst, out)
	}
	t := transportIP
	switch up.(type) {
	case *radioUpstream:
		t = transportRadio
	case *pluginUpstream:
		t = transportPlugin
	}
	r.recordLatency(t, start)
	return r.answer(w, resp, err)
}

// target resolves where a request goes and the message to send there.
func (r *router) target(ctx context.Context, in *coap.Message) (netip.AddrPort, *coap.Message, Upstream, error) {
	if u, byHost := r.route(in); u != nil {
		dst, out, err := r.reverse(ctx, in, u, byHost)
		return dst, out, nil, err
	}
	out := *in
	var u *coap.URI
	var parsed *parsedURI
	if pu, ok := in.Options.Get(coap.ProxyURI); ok {
		var err error
		if parsed, err = r.uris.parse(pu); err != nil {
			// Proxy-Uri is critical: a value that cannot be used is a bad
			// option (§5.4.1).
			return netip.AddrPort{}, nil, nil, coap.Errorf(coap.BadOption, "Proxy-Uri: %v", err)
		}
		u = parsed.u
	} else {
		scheme, _ := in.Options.Get(coap.ProxyScheme)
		host, ok := in.Options.Get(coap.URIHost)
		if !ok {
			return netip.AddrPort{}, nil, nil, coap.Errorf(coap.BadRequest, "Proxy-Scheme needs Uri-Host")
		}
		port := coap.DefaultPort(string(scheme))
		u = coap.URIFromOptions(in.Options, string(scheme), string(host), port)
	}
	var via Upstream // nil: UDP or a radio, by the address
	var viaDst netip.AddrPort
	switch u.Scheme {
	case "coap":
	case "coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws", "coaps":
		dst, up, err := r.viaTransport(ctx, u)
		if err != nil {
			return dst, nil, nil, err
		}
		via, viaDst = up, dst
	default:
		t, ok := r.translator(u.Scheme)
		if !ok || r.nextHop.IsValid() {
			// §5.7.2: a scheme this proxy cannot serve.
			return netip.AddrPort{}, nil, nil, coap.Errorf(coap.ProxyingNotSupported, "scheme %q", u.Scheme)
		}
		// A plugin translates (HTTP, ...): it gets the request as it
		// came, Proxy-Uri included; the allow list still applies.
		if _, err := r.resolve(ctx, u); err != nil {
			return netip.AddrPort{}, nil, nil, err
		}
		out.Options = append(coap.Options(nil), in.Options...)
		return netip.AddrPort{}, &out, &pluginUpstream{t: t, uri: u.String()}, nil
	}
	if via != nil {
		// PR1.1/PR1.2 as for coap: Uri-* for the origin, the framing is
		// the transport's.
		if parsed != nil {
			out.Options = withURI(in.Options, parsed.opts)
		} else {
			out.Options = append(coap.Options(nil), in.Options...).Remove(coap.ProxyScheme)
		}
		return viaDst, &out, via, nil
	}
	if r.nextHop.IsValid() {
		// PR1.1/PR1.2: towards a next-hop proxy the request keeps its form.
		out.Options = append(coap.Options(nil), in.Options...)
		return r.nextHop, &out, nil, nil
	}
	dst, err := r.resolve(ctx, u)
	if err != nil {
		return dst, nil, nil, err
	}
	if parsed != nil {
		// PR1.1: split Proxy-Uri into Uri-* options (§6.4) and drop it.
		// dst has the URI's port (resolve), so no Uri-Port is needed.
		out.Options = withURI(in.Options, parsed.opts)
	} else {
		// PR1.2: drop Proxy-Scheme, keep Uri-* as they are.
		out.Options = append(coap.Options(nil), in.Options...).Remove(coap.ProxyScheme)
	}
	return dst, &out, nil, nil
}

// reverse maps a request for a route's name to its target (§5.7.3
// reverse proxy): /name/rest → target/rest; or, byHost, a request whose
// Uri-Host names a registered endpoint to that endpoint.
func (r *router) reverse(ctx context.Context, in *coap.Message, u *coap.URI, byHost bool) (netip.AddrPort, *coap.Message, error) {
	out := *in
	out.Options = append(coap.Options(nil), in.Options...)
	if byHost {
		// The Uri-Host names the endpoint: only the destination
		// changes, every Uri-* option goes as it came (the form PR1.2
		// keeps), so that an OSCORE request, whose Uri-Path is inside
		// its ciphertext, is routed byte for byte.
		dst, err := r.resolve(ctx, u)
		if err != nil {
			return dst, nil, err
		}
		return dst, &out, nil
	}
	rest := coap.URIFromOptions(in.Options, "", "", 0)
	t := *u
	t.Path = append(append([]string(nil), u.Path...), rest.Path[1:]...)
	t.Query = append(append([]string(nil), u.Query...), rest.Query...)
	dst, err := r.resolve(ctx, &t)
	if err != nil {
		return dst, nil, err
	}
	out.Options = t.SetOptions(out.Options, dst.Port())
	return dst, &out, nil
}

// viaTransport picks the upstream for a coap+tcp, coaps+tcp, coap+ws,
// coaps+ws or coaps target (RFC 8323, RFC 7252 §9): a pooled connection
// with the origin's credentials, never to a radio node.
func (r *router) viaTransport(ctx context.Context, u *coap.URI) (netip.AddrPort, Upstream, error) {
	if r.nextHop.IsValid() || r.streams == nil {
		return netip.AddrPort{}, nil, coap.Errorf(coap.ProxyingNotSupported, "scheme %q", u.Scheme)
	}
	if coap.Inline(ctx) {
		// A connection may have to be dialled: not on a reader.
		return netip.AddrPort{}, nil, errWouldBlock
	}
	dst, err := r.resolve(ctx, u)
	if err != nil {
		return dst, nil, err
	}
	if r.radioFor(dst.Addr()) != nil {
		return netip.AddrPort{}, nil, coap.Errorf(coap.ProxyingNotSupported, "scheme %q to a radio node", u.Scheme)
	}
	cr := r.creds[originURIKey(u)]
	if cr == nil {
		cr = defaultCreds(u)
	}
	if u.Scheme == "coaps" {
		return dst, &dtlsUpstream{o: r.dtls, k: originKey{scheme: u.Scheme, host: u.Host, addr: dst}, cr: cr}, nil
	}
	return dst, r.streams.upstream(u, dst, cr), nil
}

// resolve finds the target's address and applies the allow list: this is
// not an open proxy. A refused target gets 5.05, the code §5.10.2 gives an
// endpoint unwilling to proxy for a request URI.
func (r *router) resolve(ctx context.Context, u *coap.URI) (netip.AddrPort, error) {
	var addr netip.Addr
	if a, err := netip.ParseAddr(u.Host); err == nil {
		addr = a
	} else if a, ok := parseIPv4Number(u.Host); ok {
		addr = a
	} else if coap.Inline(ctx) {
		return netip.AddrPort{}, errWouldBlock
	} else {
		addrs, err := r.lookup(ctx, u.Host)
		if ctx.Err() != nil {
			return netip.AddrPort{}, &coap.Error{Code: coap.GatewayTimeout, Diagnostic: "resolving " + u.Host, MaxAge: -1, Err: ctx.Err()}
		}
		if err != nil || len(addrs) == 0 {
			return netip.AddrPort{}, coap.Errorf(coap.BadGateway, "cannot resolve %q", u.Host)
		}
		addr = addrs[0]
	}
	addr = addr.Unmap()
	if r.radioFor(addr) != nil {
		// A radio's own network is reachable by configuration.
		return netip.AddrPortFrom(addr, u.Port), nil
	}
	if !contains(r.allow, addr) {
		return netip.AddrPort{}, coap.Errorf(coap.ProxyingNotSupported, "target %v not allowed", addr)
	}
	return netip.AddrPortFrom(addr, u.Port), nil
}

// parseIPv4Number reads the numeric IPv4 forms the C library's resolver
// takes (inet_aton, which getaddrinfo tries before DNS): one to four
// parts separated by dots, each decimal, octal with a leading 0 or
// hexadecimal with 0x; the last part fills the bytes the others leave
// ("127.1" is 127.0.0.1, "2130706433" and "0x7f.1" are too). RFC 3986
// §3.2.2 takes only four decimal parts for an IPv4address, so in a URI
// these forms are reg-names; §7.4 warns that implementations read them
// differently. Go's own resolver, which gatewayd uses, sends them to DNS,
// which knows no such name: 5.02. Read here, the address they stand for
// is the one the allow list judges and the one the request goes to, so
// the two cannot disagree. Anything else is not a number (false) and is
// looked up as a name.
func parseIPv4Number(host string) (netip.Addr, bool) {
	if host == "" || len(host) > len("0xffffffff.0xffffffff.0xffffffff.0xffffffff") {
		return netip.Addr{}, false
	}
	var parts [4]uint64
	n := 0
	for p := range strings.SplitSeq(host, ".") {
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := parseIPv4Part(p)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
	}
	// The last part fills 32 bits less those of the others.
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	if parts[n-1] >= 1<<(32-8*(n-1)) {
		return netip.Addr{}, false
	}
	v |= parts[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Part reads one part of parseIPv4Number: 0x/0X and at least one
// hex digit, 0 and octal digits, or decimal digits.
func parseIPv4Part(p string) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
		base, p = 16, p[2:]
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	case p == "":
		return 0, false
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		c := p[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		if v = v*base + d; v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}

// radioFor returns the radio whose network holds addr.
func (r *router) radioFor(addr netip.Addr) *radioUpstream {
	for _, u := range r.radios {
		if u.r.Contains(addr) {
			return u
		}
	}
	return nil
}

// reach returns the upstream for a request of the proxy's own (simple
// registration's GET of a node's /.well-known/core) to addr, which a
// forwarded request could reach too: in a radio's network or the allow
// list.
func (r *router) reach(addr netip.Addr) (Upstream, error) {
	addr = addr.Unmap()
	if u := r.radioFor(addr); u != nil {
		return u, nil
	}
	if !contains(r.allow, addr) {
		return nil, fmt.Errorf("bridge: %v is not in allow", addr)
	}
	return r.up, nil
}

// upstream picks the transport for a target address.
func (r *router) upstream(addr netip.Addr) Upstream {
	if u := r.radioFor(addr); u != nil {
		return u
	}
	return r.up
}

// upstreamError maps a failed exchange to the code the client gets.
func upstreamError(err error) error {
	var ce *coap.Error
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, coap.ErrTimeout):
		return &coap.Error{Code: coap.GatewayTimeout, MaxAge: -1, Err: err}
	case errors.Is(err, coap.ErrUnreachable):
		// The network reported the target unreachable (ICMP): the
		// origin's failure, told at once (§5.7.2).
		return &coap.Error{Code: coap.BadGateway, Diagnostic: "target unreachable", MaxAge: -1, Err: err}
	default:
		// RST from the origin, unreachable network, radio down: 5.02.
		return &coap.Error{Code: coap.BadGateway, MaxAge: -1, Err: err}
	}
}
