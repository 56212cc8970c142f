package bridge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	pathpkg "path"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/opaque-edge/gatewayd/cache"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/rd"
)

// Config is the root of gatewayd.toml. Each section belongs to the package
// that uses it; Validate checks all of them.
type Config struct {
	Proxy   ProxyConfig      `toml:"proxy"`
	Route   []RouteConfig    `toml:"route"`
	Origin  []OriginConfig   `toml:"origin"`
	Radio   []radio.Config   `toml:"radio"`
	Cache   cache.Config     `toml:"cache"`
	Observe observe.Config   `toml:"observe"`
	Metrics MetricsConfig    `toml:"metrics"`
	PubSub  pubsub.Config    `toml:"pubsub"`
	RD      rd.Config        `toml:"rd"`
	Plugin  []plugins.Config `toml:"plugin"`
	// GroupComm and Group are group requests through the proxy
	// (group.go).
	GroupComm GroupCommConfig `toml:"groupcomm"`
	Group     []GroupConfig   `toml:"group"`
}

// ProxyConfig is the [proxy] section.
type ProxyConfig struct {
	// Listen are the endpoints: "udp://host:port", "dtls://host:port",
	// and CoAP over reliable transports (RFC 8323): "tcp://host:port",
	// "tls://host:port", "ws://host:port/path", "wss://host:port/path"
	// (the path defaults to /.well-known/coap, §4).
	Listen []string `toml:"listen"`
	// Keepalive is how long a TCP, TLS or WebSocket client may be quiet
	// before it gets a CoAP Ping; one that does not answer within as long
	// again is closed (RFC 8323 §5.4). 0 turns it off: idle connections
	// are then never closed by gatewayd.
	Keepalive Duration `toml:"keepalive"`
	// MaxMessageSize is the largest message taken over TCP, TLS and
	// WebSockets, and the Max-Message-Size of gatewayd's CSM (RFC 8323
	// §5.3.1).
	MaxMessageSize int `toml:"max_message_size"`
	// MaxConnections bounds the connections of each stream listener;
	// MaxHandshakes those of them still in their TLS or WebSocket
	// handshake or without a CSM.
	MaxConnections int `toml:"max_connections"`
	MaxHandshakes  int `toml:"max_handshakes"`
	// WSOrigins are the web origins (host patterns) other than the
	// gateway's own whose pages may open ws:// and wss:// connections.
	WSOrigins []string `toml:"ws_origins"`
	// OriginIdle is how long a connection to a coap+tcp, coaps+tcp,
	// coap+ws, coaps+ws or coaps origin stays open with no exchange and
	// no observation on it; the next request opens a new one. 0 keeps
	// them open (up to 256 origins).
	OriginIdle Duration `toml:"origin_idle"`
	// Allow are the CIDR prefixes of targets the proxy may reach.
	Allow []string `toml:"allow"`
	// Clients are the CIDR prefixes of clients that may use the proxy;
	// datagrams from elsewhere are dropped unanswered.
	Clients []string `toml:"clients"`
	// Timeout bounds a whole upstream exchange; then 5.04.
	Timeout Duration `toml:"timeout"`
	// NextHop, when set, is a proxy ("coap://host:port") every forward
	// request goes to, with Proxy-Uri or Proxy-Scheme kept (PR1.1, PR1.2).
	NextHop string `toml:"next_hop"`
	// HopLimit is inserted when a request has none (RFC 8768 §3).
	HopLimit int `toml:"hop_limit"`
	// Name identifies this proxy in 5.08 diagnostics (RFC 8768 §4).
	Name string `toml:"name"`
	// Rate and Burst are each client's token bucket: requests per second
	// and bucket size. Rate 0 disables the limit.
	Rate  float64 `toml:"rate"`
	Burst int     `toml:"burst"`
	// MaxInflight bounds the requests each listener has in flight at
	// once (waiting on an upstream, or on the hub or broker); beyond it
	// 5.03. MaxInflightPerClient is one client's share of them: an IPv4
	// address, an IPv6 /64. Requests for the proxy itself
	// (/.well-known/core) take no slot. The same bounds hold the separate
	// responses a client has not acknowledged; past them, NON.
	MaxInflight          int `toml:"max_inflight"`
	MaxInflightPerClient int `toml:"max_inflight_per_client"`
	// PSKFile holds DTLS pre-shared keys, one "identity:key" per line.
	PSKFile string `toml:"psk_file"`
	// CertFile and KeyFile are the DTLS listeners' certificate chain and
	// private key, PEM (RFC 7252 §9.1.3.3). ClientCAFile (PEM), when set,
	// makes a client certificate issued by one of its CAs a requirement
	// for clients that do not use a pre-shared key.
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	ClientCAFile string `toml:"client_ca_file"`
	// Verified are the CIDR prefixes of clients whose source addresses
	// are taken as not forged: their answers are never cut to three times
	// their requests' size (amp.go). Loopback by default, which the
	// kernel does not accept from outside the host.
	Verified []string `toml:"verified"`
	// VerifiedFor is how long an address stays verified after it sent back
	// an Echo value or acknowledged a CON (RFC 9175 §2.4 item 3).
	VerifiedFor Duration `toml:"verified_for"`
	// MaxVerified bounds the addresses remembered as verified; past it the
	// least recently verified is forgotten.
	MaxVerified int `toml:"max_verified"`
	// EchoLifetime is how long an Echo value this proxy made is accepted
	// back (RFC 9175 §2.3: (t1 - t0) < T).
	EchoLifetime Duration `toml:"echo_lifetime"`
}

// RouteConfig is a reverse route: requests for /Name/... on the proxy go to
// Target/... (RFC 7252 §5.7.3).
type RouteConfig struct {
	Name   string `toml:"name" json:"name"`
	Target string `toml:"target" json:"target"`
}

// Duration is a time.Duration written as "3s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText renders the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults returns the configuration of a proxy with no file: loopback
// only.
func Defaults() Config {
	return Config{Cache: cache.Defaults(), Observe: observe.Defaults(), Metrics: MetricsConfig{Listen: DefaultMetricsListen, Console: true}, PubSub: pubsub.Defaults(), RD: rd.Defaults(), GroupComm: defaultGroupComm(), Proxy: ProxyConfig{
		Listen:       []string{"udp://127.0.0.1:5683"},
		Allow:        []string{"127.0.0.0/8", "::1/128"},
		Clients:      []string{"127.0.0.0/8", "::1/128"},
		Timeout:      Duration{3 * time.Second},
		HopLimit:     16,
		Rate:         0,
		Burst:        100,
		Verified:     []string{"127.0.0.0/8", "::1/128"},
		VerifiedFor:  Duration{time.Hour},
		MaxVerified:  10000,
		EchoLifetime: Duration{10 * time.Minute},

		MaxInflight:          4096,
		MaxInflightPerClient: 64,

		MaxMessageSize: stream.BaseMaxMessageSize,
		MaxConnections: 1024,
		MaxHandshakes:  64,
		OriginIdle:     Duration{5 * time.Minute},
	}}
}

// maxVerifiedLimit keeps a typo from configuring an unbounded table of
// verified addresses (about 100 bytes each).
const maxVerifiedLimit = 1 << 20

// ErrConfig marks configuration errors.
var ErrConfig = errors.New("config")

// Load reads a TOML file over the defaults. Unknown keys are an error
// that names the key and its line.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return Parse(path, data)
}

// Parse decodes TOML over the defaults and validates the result.
func Parse(name string, data []byte) (Config, error) {
	// Package radio reads the [[radio]] tables: each driver owns its keys.
	f := struct {
		Config
		Radio []toml.Primitive `toml:"radio"`
	}{Config: Defaults()}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	c := f.Config
	for i := 0; err == nil && i < len(f.Radio); i++ {
		var r radio.Config
		r, err = radio.Decode(func(v any) error { return md.PrimitiveDecode(f.Radio[i], v) })
		if errors.Is(err, radio.ErrConfig) {
			return Config{}, invalid(name, data, fmt.Errorf("radio[%d]: %w", i, err))
		}
		c.Radio = append(c.Radio, r)
	}
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return Config{}, fmt.Errorf("%w: %s:%d: key %q: %s", ErrConfig, name, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return Config{}, fmt.Errorf("%w: %s:%d: %s", ErrConfig, name, pe.Position.Line, pe.Message)
		}
		return Config{}, fmt.Errorf("%w: %s: %v", ErrConfig, name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return Config{}, fmt.Errorf("%w: %s:%d: unknown key %q", ErrConfig, name, keyLine(data, k), k.String())
	}
	if err := c.Validate(); err != nil {
		return Config{}, invalid(name, data, err)
	}
	return c, nil
}

// invalid is a Validate error of the file name, with the line it is about
// when one is found.
func invalid(name string, data []byte, err error) error {
	if line := validationLine(data, err.Error()); line > 0 {
		return fmt.Errorf("%w: %s:%d: %w", ErrConfig, name, line, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
}

// MarshalTOML writes c in the format Parse reads, each radio's driver
// options in its [radio.<driver>] table (radio.Config.Table).
func (c Config) MarshalTOML() ([]byte, error) {
	type plain Config // the same fields, without this method
	f := struct {
		plain
		Radio []map[string]any `toml:"radio"`
	}{plain: plain(c)}
	f.plain.Radio = nil
	for _, r := range c.Radio {
		f.Radio = append(f.Radio, r.Table())
	}
	var b bytes.Buffer
	err := toml.NewEncoder(&b).Encode(f)
	return b.Bytes(), err
}

// Validate checks every section.
func (c *Config) Validate() error {
	if err := c.Proxy.validate(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if err := c.Cache.Validate(); err != nil {
		return err
	}
	if err := c.Observe.Validate(); err != nil {
		return err
	}
	if c.PubSub.Enabled {
		if err := c.PubSub.Validate(); err != nil {
			return err
		}
	}
	if c.RD.Enabled {
		if err := c.RD.Validate(); err != nil {
			return err
		}
	}
	if c.Metrics.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics: listen %q: want ip:port", c.Metrics.Listen)
		}
	}
	if _, err := loadOrigins(c.Origin); err != nil {
		return err
	}
	names := map[string]bool{}
	for i, pc := range c.Plugin {
		pc = pc.Defaults()
		if err := pc.Validate(); err != nil {
			return fmt.Errorf("plugin[%d]: %w", i, err)
		}
		if names[pc.Name] {
			return fmt.Errorf("plugin[%d]: duplicate name %q", i, pc.Name)
		}
		names[pc.Name] = true
	}
	radios := map[string]bool{}
	for i, r := range c.Radio {
		r = r.Defaults()
		if err := r.Validate(); err != nil {
			return fmt.Errorf("radio[%d]: %w", i, err)
		}
		if name, ok := strings.CutPrefix(r.Driver, radio.PluginDriverPrefix); ok && !names[name] {
			return fmt.Errorf("radio[%d]: driver %q: no [[plugin]] named %q", i, r.Driver, name)
		}
		if radios[r.Name] {
			return fmt.Errorf("radio[%d]: duplicate name %q", i, r.Name)
		}
		radios[r.Name] = true
	}
	if err := validateGroups(c.GroupComm, c.Group, radios); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, r := range c.Route {
		if r.Name == "" || strings.ContainsAny(r.Name, "/?#") {
			return fmt.Errorf("route[%d]: name %q must be one path segment", i, r.Name)
		}
		if seen[r.Name] {
			return fmt.Errorf("route[%d]: duplicate name %q", i, r.Name)
		}
		seen[r.Name] = true
		u, err := coap.ParseURI(r.Target)
		if err != nil {
			return fmt.Errorf("route[%d] %q: target: %w", i, r.Name, err)
		}
		if u.Scheme != "coap" {
			return fmt.Errorf("route[%d] %q: target scheme %q: only coap is supported", i, r.Name, u.Scheme)
		}
	}
	return nil
}

// loopback are the prefixes of the host's own loopback: IPv4, IPv6, and
// IPv4 loopback mapped into IPv6.
var loopback = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:127.0.0.0/104"),
}

// withinLoopback reports whether every address of p is a loopback one.
func withinLoopback(p netip.Prefix) bool {
	for _, l := range loopback {
		if l.Bits() <= p.Bits() && l.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// Warnings are what a valid configuration may still get wrong, for
// -check, the start and reloads to say.
//
// Clients beyond loopback with loopback in allow: anyone admitted could
// send CoAP through the proxy to whatever listens on the gateway's own
// 127.0.0.1 or ::1 (plugins, other daemons), which trusts loopback. pprof
// on a listen address beyond loopback: anyone who reaches the port can
// make the gateway profile itself.
func (c *Config) Warnings() []string {
	var w []string
	clients, _ := parsePrefixes(c.Proxy.Clients)
	allow, _ := parsePrefixes(c.Proxy.Allow)
	var lan, lo netip.Prefix
	for _, p := range clients {
		if !withinLoopback(p) {
			lan = p
			break
		}
	}
	for _, p := range allow {
		if slices.ContainsFunc(loopback, p.Overlaps) {
			lo = p
			break
		}
	}
	if lan.IsValid() && lo.IsValid() {
		w = append(w, fmt.Sprintf("proxy: clients admits %v, beyond loopback, and allow contains %v: "+
			"those clients can reach the gateway's own loopback services through the proxy; take loopback out of allow", lan, lo))
	}
	for _, r := range c.Radio {
		if name, ok := strings.CutPrefix(r.Driver, radio.PluginDriverPrefix); ok && !r.ExtAddr.IsValid() {
			w = append(w, fmt.Sprintf("radio %q: driver %q and no ext_addr: should plugin %q fail to start, "+
				"gatewayd waits up_timeout for the address and then stops; set ext_addr to start without it", r.Name, r.Driver, name))
		}
	}
	if c.Metrics.PProf && c.Metrics.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Metrics.Listen); err == nil && !ap.Addr().Unmap().IsLoopback() {
			w = append(w, fmt.Sprintf("metrics: pprof is on and listen %q is not loopback: "+
				"anyone who reaches the port can start a CPU profile or trace", c.Metrics.Listen))
		}
	}
	if c.Metrics.Listen != "" && c.Metrics.TokenFile == "" {
		if ap, err := netip.ParseAddrPort(c.Metrics.Listen); err == nil && !ap.Addr().Unmap().IsLoopback() {
			w = append(w, fmt.Sprintf("metrics: listen %q is not loopback and there is no token_file: "+
				"anyone who reaches the port reads the status and the console", c.Metrics.Listen))
		}
	}
	return w
}

func (p *ProxyConfig) validate() error {
	if len(p.Listen) == 0 {
		return errors.New("listen: at least one endpoint is needed")
	}
	for _, l := range p.Listen {
		if _, err := parseListen(l); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	if err := p.validateStreams(); err != nil {
		return err
	}
	if _, err := parsePrefixes(p.Allow); err != nil {
		return fmt.Errorf("allow: %w", err)
	}
	if _, err := parsePrefixes(p.Clients); err != nil {
		return fmt.Errorf("clients: %w", err)
	}
	if _, err := parsePrefixes(p.Verified); err != nil {
		return fmt.Errorf("verified: %w", err)
	}
	if p.VerifiedFor.Duration <= 0 || p.VerifiedFor.Duration > 7*24*time.Hour {
		return fmt.Errorf("verified_for: want more than 0s and at most 168h, got %v", p.VerifiedFor)
	}
	if p.MaxVerified < 1 || p.MaxVerified > maxVerifiedLimit {
		return fmt.Errorf("max_verified: want 1 to %d, got %d", maxVerifiedLimit, p.MaxVerified)
	}
	if p.EchoLifetime.Duration < time.Second || p.EchoLifetime.Duration > 24*time.Hour {
		return fmt.Errorf("echo_lifetime: want 1s to 24h, got %v", p.EchoLifetime)
	}
	if p.Timeout.Duration <= 0 {
		return fmt.Errorf("timeout: must be positive, got %v", p.Timeout)
	}
	if p.HopLimit < 1 || p.HopLimit > 255 {
		return fmt.Errorf("hop_limit: %d is outside 1..255 (RFC 8768 §3)", p.HopLimit)
	}
	if strings.ContainsRune(p.Name, ' ') {
		return fmt.Errorf("name: %q contains a space (RFC 8768 §4)", p.Name)
	}
	if p.NextHop != "" {
		u, err := coap.ParseURI(p.NextHop)
		if err != nil || u.Scheme != "coap" || !u.HostIsIP() {
			return fmt.Errorf("next_hop: %q must be coap://ip:port", p.NextHop)
		}
	}
	if !(p.Rate >= 0) || math.IsInf(p.Rate, 1) || p.Burst < 1 {
		// NaN and infinity slip past a plain comparison; either makes
		// every bucket NaN, and every request a 4.29.
		return fmt.Errorf("rate/burst: rate must be a number >= 0 and burst >= 1")
	}
	if p.MaxInflight < 1 || p.MaxInflight > maxInflight {
		return fmt.Errorf("max_inflight: %d is outside 1..%d", p.MaxInflight, maxInflight)
	}
	if p.MaxInflightPerClient < 1 || p.MaxInflightPerClient > p.MaxInflight {
		return fmt.Errorf("max_inflight_per_client: %d is outside 1..max_inflight (%d)", p.MaxInflightPerClient, p.MaxInflight)
	}
	for _, l := range p.Listen {
		la, _ := parseListen(l)
		if la.scheme == "dtls" && p.PSKFile == "" && p.CertFile == "" {
			return fmt.Errorf("psk_file: a dtls address in listen needs keys (psk_file) or a certificate (cert_file)")
		}
		if (la.scheme == "tls" || la.scheme == "wss") && p.CertFile == "" {
			return fmt.Errorf("cert_file: a %s address in listen needs a certificate (cert_file, key_file)", la.scheme)
		}
	}
	_, err := p.dtlsKeys()
	return err
}

// validateStreams checks the bounds of the stream listeners (RFC 8323:
// tcp://, tls://, ws://, wss://).
func (p *ProxyConfig) validateStreams() error {
	if p.Keepalive.Duration < 0 || p.Keepalive.Duration > 0 && p.Keepalive.Duration < time.Second {
		return fmt.Errorf("keepalive: want 0s (off) or at least 1s, got %v", p.Keepalive)
	}
	if p.MaxMessageSize < 64 || p.MaxMessageSize > maxMessageSize {
		return fmt.Errorf("max_message_size: %d is outside 64..%d", p.MaxMessageSize, maxMessageSize)
	}
	if p.MaxConnections < 1 || p.MaxConnections > maxConnections {
		return fmt.Errorf("max_connections: %d is outside 1..%d", p.MaxConnections, maxConnections)
	}
	if p.MaxHandshakes < 1 || p.MaxHandshakes > p.MaxConnections {
		return fmt.Errorf("max_handshakes: %d is outside 1..max_connections (%d)", p.MaxHandshakes, p.MaxConnections)
	}
	if p.OriginIdle.Duration < 0 || p.OriginIdle.Duration > 0 && p.OriginIdle.Duration < time.Second {
		return fmt.Errorf("origin_idle: want 0s (never closed) or at least 1s, got %v", p.OriginIdle)
	}
	for _, o := range p.WSOrigins {
		if _, err := pathpkg.Match(o, ""); err != nil || o == "" {
			return fmt.Errorf("ws_origins: %q is not a host pattern", o)
		}
	}
	return nil
}

// maxInflight bounds max_inflight: each request in flight holds a few KiB
// until its upstream answers or times out.
const maxInflight = 1 << 20

// maxMessageSize bounds max_message_size: a request of that size is held
// whole while it is served. maxConnections bounds max_connections.
const (
	maxMessageSize = 8 << 20
	maxConnections = 1 << 20
)

// dtlsKeys loads what the DTLS listeners authenticate with. Errors name
// the key at fault.
func (p *ProxyConfig) dtlsKeys() (DTLSKeys, error) {
	var k DTLSKeys
	if p.PSKFile != "" {
		psk, err := LoadPSK(p.PSKFile)
		if err != nil {
			return k, fmt.Errorf("psk_file: %w", err)
		}
		k.PSK = psk
	}
	switch {
	case p.CertFile != "" && p.KeyFile == "":
		return k, errors.New("key_file: cert_file needs its private key")
	case p.KeyFile != "" && p.CertFile == "":
		return k, errors.New("cert_file: key_file needs its certificate")
	case p.ClientCAFile != "" && p.CertFile == "":
		return k, errors.New("cert_file: client_ca_file needs the listener's own certificate")
	case p.CertFile != "":
		certPEM, err := readKeyFile(p.CertFile)
		if err != nil {
			return k, fmt.Errorf("cert_file: %w", err)
		}
		keyPEM, err := readKeyFile(p.KeyFile)
		if err != nil {
			return k, fmt.Errorf("key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return k, fmt.Errorf("cert_file, key_file: %w", err)
		}
		k.Certificate = &cert
	}
	if p.ClientCAFile != "" {
		pem, err := readKeyFile(p.ClientCAFile)
		if err != nil {
			return k, fmt.Errorf("client_ca_file: %w", err)
		}
		k.ClientCAs = x509.NewCertPool()
		if !k.ClientCAs.AppendCertsFromPEM(pem) {
			return k, fmt.Errorf("client_ca_file: %s: no PEM certificate", p.ClientCAFile)
		}
	}
	return k, nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxKeyFile bounds a key, certificate or PSK file: PEM chains and PSK
// lists are kilobytes.
const maxKeyFile = 1 << 20

// readKeyFile reads a file the configuration names for DTLS: a regular
// file of at most maxKeyFile bytes. A device, a pipe or a huge file named
// by mistake (/dev/zero, /proc/kcore) is an error, not a read without
// end or an allocation of its reported size.
func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxKeyFile)
	}
	return b, nil
}

// LoadPSK reads "identity:key" lines; "#" starts a comment. The key is
// used as written, as libcoap's -k takes it.
func LoadPSK(path string) (map[string][]byte, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	keys := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, key, ok := strings.Cut(line, ":")
		if !ok || id == "" || key == "" {
			return nil, fmt.Errorf("%s:%d: want identity:key", path, n)
		}
		keys[id] = []byte(key)
	}
	if err := sc.Err(); err != nil {
		// A line over the scanner's 64 KiB: not a key, and the lines
		// after it are not to be dropped silently.
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}
