package rd

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/opaque-edge/gatewayd/acl"
)

// Config is the [rd] section of gatewayd.toml.
type Config struct {
	// Enabled puts the resource directory in the chain.
	Enabled bool `toml:"enabled"`
	// StateDir holds one file per registration, so that registrations
	// outlive a restart.
	StateDir string `toml:"state_dir"`
	// MaxRegistrations bounds the registrations held at once; a new one
	// beyond it gets 5.03 with Max-Age until the next one expires.
	MaxRegistrations int `toml:"max_registrations"`
	// MaxRegistrationsPerClient bounds the registrations one client
	// holds (acl.Client.Key: its DTLS identity, IPv4 address, IPv6 /64,
	// or a radio node's own address), so that one client cannot fill
	// the directory; beyond it a new registration gets 4.03.
	MaxRegistrationsPerClient int `toml:"max_registrations_per_client"`
	// MaxLinks bounds the links of one registration.
	MaxLinks int `toml:"max_links"`
	// MaxBytes bounds one registration: its link-format document, its
	// name, sector, base and endpoint attributes, in bytes. The RD holds
	// at most max_registrations × max_bytes of registrations.
	MaxBytes int `toml:"max_bytes"`
	// Registrants may register, update and remove registrations, simple
	// registration included; others get 4.03. Entries are those of
	// package acl. Empty: no one.
	Registrants []string `toml:"registrants"`
	// Lookups, when not empty, are the only clients that may look up
	// endpoints and resources; empty: every client the proxy admits.
	Lookups []string `toml:"lookups"`
	// DefaultLifetime is the lifetime of a registration that names none
	// (RFC 9176 §5: 90000 s).
	DefaultLifetime Duration `toml:"default_lifetime"`
	// MinLifetime and MaxLifetime bound the lifetime (lt) a registrant
	// asks for; outside them the registration gets 4.00.
	MinLifetime Duration `toml:"min_lifetime"`
	MaxLifetime Duration `toml:"max_lifetime"`
	// Routes says which registered endpoints become reverse routes of
	// the proxy, coap://<gateway>/<ep>/... to their base: "all", "ask"
	// (only registrations with proxy=yes, as aiocoap's RD has it) or
	// "off".
	Routes string `toml:"routes"`
	// Domain, when set, routes requests with Uri-Host "<ep>.<domain>"
	// to the endpoint too, their Uri-* options untouched: the form in
	// which OSCORE requests can be routed by name, since their Uri-Path
	// is encrypted (RFC 8613 §4.1.1) and Uri-Host is not.
	Domain string `toml:"domain"`
	// Simple turns simple registration (RFC 9176 §5.1, POST
	// /.well-known/rd) on; off, it gets 4.03.
	Simple bool `toml:"simple"`
	// FetchTimeout bounds simple registration's GET of the node's
	// /.well-known/core, all its blocks included; then 5.04.
	FetchTimeout Duration `toml:"fetch_timeout"`
}

// Values of Config.Routes.
const (
	RoutesAll = "all"
	RoutesAsk = "ask"
	RoutesOff = "off"
)

// Duration is a time.Duration written as a string in TOML, e.g. "25h".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("rd: duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults are the values of an empty [rd] section.
func Defaults() Config {
	return Config{
		StateDir:                  "/var/lib/gatewayd/rd",
		MaxRegistrations:          256,
		MaxRegistrationsPerClient: 64,
		MaxLinks:                  64,
		MaxBytes:                  4096,
		Registrants:               []string{acl.Loopback, acl.Radio},
		DefaultLifetime:           Duration{90000 * time.Second},
		MinLifetime:               Duration{60 * time.Second},
		MaxLifetime:               Duration{7 * 24 * time.Hour},
		Routes:                    RoutesAll,
		Simple:                    true,
		FetchTimeout:              Duration{10 * time.Second},
	}
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("rd: bad config")

// Bounds a configuration may not exceed, so that a typo cannot make the
// directory unbounded.
const (
	maxRegistrationsLimit = 1 << 16
	maxLinksLimit         = 4096
	maxBytesLimit         = 1 << 20
	minBytes              = 256
	maxFetchTimeout       = 5 * time.Minute
)

// maxLT is the largest lifetime RFC 9176 §5 allows: lt is 1-4294967295.
const maxLT = time.Duration(math.MaxUint32) * time.Second

// Validate checks every field.
func (c Config) Validate() error {
	switch {
	case c.StateDir == "" || !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("%w: state_dir must be an absolute path, got %q", ErrConfig, c.StateDir)
	case c.MaxRegistrations < 1 || c.MaxRegistrations > maxRegistrationsLimit:
		return fmt.Errorf("%w: max_registrations must be between 1 and %d, got %d", ErrConfig, maxRegistrationsLimit, c.MaxRegistrations)
	case c.MaxRegistrationsPerClient < 1 || c.MaxRegistrationsPerClient > maxRegistrationsLimit:
		return fmt.Errorf("%w: max_registrations_per_client must be between 1 and %d, got %d", ErrConfig, maxRegistrationsLimit, c.MaxRegistrationsPerClient)
	case c.MaxLinks < 1 || c.MaxLinks > maxLinksLimit:
		return fmt.Errorf("%w: max_links must be between 1 and %d, got %d", ErrConfig, maxLinksLimit, c.MaxLinks)
	case c.MaxBytes < minBytes || c.MaxBytes > maxBytesLimit:
		return fmt.Errorf("%w: max_bytes must be between %d and %d, got %d", ErrConfig, minBytes, maxBytesLimit, c.MaxBytes)
	case c.MinLifetime.Duration < time.Second || c.MinLifetime.Duration%time.Second != 0:
		return fmt.Errorf("%w: min_lifetime must be whole seconds, at least 1s, got %v", ErrConfig, c.MinLifetime.Duration)
	case c.MaxLifetime.Duration < c.MinLifetime.Duration || c.MaxLifetime.Duration > maxLT || c.MaxLifetime.Duration%time.Second != 0:
		return fmt.Errorf("%w: max_lifetime must be whole seconds from min_lifetime (%v) to %v, got %v", ErrConfig, c.MinLifetime.Duration, maxLT, c.MaxLifetime.Duration)
	case c.DefaultLifetime.Duration < c.MinLifetime.Duration || c.DefaultLifetime.Duration > c.MaxLifetime.Duration || c.DefaultLifetime.Duration%time.Second != 0:
		return fmt.Errorf("%w: default_lifetime must be whole seconds from min_lifetime (%v) to max_lifetime (%v), got %v", ErrConfig, c.MinLifetime.Duration, c.MaxLifetime.Duration, c.DefaultLifetime.Duration)
	case c.Routes != RoutesAll && c.Routes != RoutesAsk && c.Routes != RoutesOff:
		return fmt.Errorf("%w: routes must be %q, %q or %q, got %q", ErrConfig, RoutesAll, RoutesAsk, RoutesOff, c.Routes)
	case c.FetchTimeout.Duration <= 0 || c.FetchTimeout.Duration > maxFetchTimeout:
		return fmt.Errorf("%w: fetch_timeout must be more than 0s and at most %v, got %v", ErrConfig, maxFetchTimeout, c.FetchTimeout.Duration)
	}
	if c.Domain != "" {
		if err := checkDomain(c.Domain); err != nil {
			return fmt.Errorf("%w: domain %q: %w", ErrConfig, c.Domain, err)
		}
		if c.Routes == RoutesOff {
			return fmt.Errorf("%w: domain %q names routes, and routes is %q", ErrConfig, c.Domain, RoutesOff)
		}
	}
	for _, l := range []struct {
		key     string
		entries []string
	}{{"registrants", c.Registrants}, {"lookups", c.Lookups}} {
		if _, err := acl.Parse(l.entries, nil); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, l.key, err)
		}
	}
	return nil
}

// checkDomain accepts a DNS name (RFC 1123 §2.1 labels), lower case, so
// that "<ep>.<domain>" compares with a Uri-Host, which RFC 7252 §6.4
// lowers, byte for byte.
func checkDomain(d string) error {
	if len(d) > 200 {
		return errors.New("longer than 200 bytes")
	}
	for l := range strings.SplitSeq(d, ".") {
		if !dnsLabel(l) {
			return fmt.Errorf("label %q is not 1-63 of a-z 0-9 - (lower case, no - at either end)", l)
		}
	}
	return nil
}

// dnsLabel reports a lower-case DNS label.
func dnsLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
