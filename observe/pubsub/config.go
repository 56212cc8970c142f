package pubsub

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/opaque-edge/gatewayd/acl"
)

// Config is the [pubsub] section of gatewayd.toml.
type Config struct {
	// Enabled turns the broker on; the chain leaves it out otherwise.
	Enabled bool `toml:"enabled"`
	// Path is the topic collection's path below the gateway's root,
	// without slashes at either end: "ps" serves the collection at /ps,
	// topics at /ps/<id> and topic data at /ps/data/<id>.
	Path string `toml:"path"`
	// StateDir holds one file per topic: its configuration and its last
	// publication.
	StateDir string `toml:"state_dir"`
	// ContentFormat is the number used for application/core-pubsub+cbor.
	// The draft asks IANA for one (TBD606) and none is assigned yet, so it
	// is taken from the experimental range 65000–65535.
	ContentFormat uint16 `toml:"content_format"`
	// MaxTopics bounds the topics of the collection.
	MaxTopics int `toml:"max_topics"`
	// MaxPayload bounds a publication and a topic's "initialize" value, in
	// bytes.
	MaxPayload int `toml:"max_payload"`
	// MinPublishInterval is the shortest time between two publications to
	// one topic; a faster one gets 4.29 (Too Many Requests) with Max-Age
	// saying when to retry (draft §3.4, RFC 8516). Zero turns it off.
	MinPublishInterval Duration `toml:"min_publish_interval"`
	// DefaultMaxSubscribers is stored as "max-subscribers" when a topic's
	// creator asks for none; zero stores none (no limit, as the draft
	// says for an absent value).
	DefaultMaxSubscribers int `toml:"default_max_subscribers"`
	// DefaultExpiration, when not zero, gives a topic created without
	// "expiration-date" one that far in the future.
	DefaultExpiration Duration `toml:"default_expiration"`
	// Admins may create topics, change their configuration and delete
	// them (draft §2.4.3, §2.5.3–§2.5.5); others get 4.03. Entries are
	// those of package acl: CIDR prefixes, "loopback", "radio" (every
	// [[radio]] prefix), "psk:<identity>", "cn:<name>". Empty: no one.
	Admins []string `toml:"admins"`
	// Publishers, when not empty, are the only clients that may publish
	// to topic-data and delete it (§3.2.1, §3.2.4). Empty: every client
	// the proxy admits.
	Publishers []string `toml:"publishers"`
	// Subscribers, when not empty, are the only clients that may read
	// topic-data and subscribe to it (§3.2.2, §3.3). Empty: every client
	// the proxy admits.
	Subscribers []string `toml:"subscribers"`
	// MaxTopicsPerClient bounds the topics one client has created that
	// exist, the client named by acl.Client.Key (its DTLS identity, else
	// its IPv4 address or IPv6 /64).
	MaxTopicsPerClient int `toml:"max_topics_per_client"`
	// MaxNameLength bounds, in bytes, the topic-name, resource-type and
	// topic-type a client sets and the topic-data path segment it picks.
	MaxNameLength int `toml:"max_name_length"`
	// MaxAge is the Max-Age of topic-data representations and
	// notifications (capped by the topic's expiration). The hub registers
	// a quiet subscription again after it, so it also bounds how long a
	// lost notification goes unnoticed.
	MaxAge Duration `toml:"max_age"`
}

// Duration is a time.Duration written as a string in TOML, e.g. "100ms".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("pubsub: duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults are the values of an empty [pubsub] section.
func Defaults() Config {
	return Config{
		Path:               "ps",
		StateDir:           "/var/lib/gatewayd/pubsub",
		ContentFormat:      65001,
		MaxTopics:          256,
		MaxPayload:         1024,
		MinPublishInterval: Duration{100 * time.Millisecond},
		MaxAge:             Duration{60 * time.Second},
		Admins:             []string{acl.Loopback, acl.Radio},
		MaxTopicsPerClient: 16,
		MaxNameLength:      64,
	}
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("pubsub: bad config")

// Bounds a configuration may not exceed, so that a typo cannot make the
// broker unbounded.
const (
	maxTopicsLimit      = 1 << 16
	maxPayloadLimit     = 1 << 16
	maxSubscribersLimit = 1 << 20
	maxPathSegments     = 4
	maxExpirationLimit  = 100 * 365 * 24 * time.Hour
	maxMaxAge           = 24 * time.Hour
	maxPublishInterval  = time.Hour
	maxNameLimit        = 255 // a CBOR text property's bound (DecodeProperties)
)

// Validate checks every field.
func (c Config) Validate() error {
	if err := checkPath(c.Path); err != nil {
		return err
	}
	switch {
	case c.StateDir == "" || !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("%w: state_dir must be an absolute path, got %q", ErrConfig, c.StateDir)
	case c.ContentFormat < 65000:
		return fmt.Errorf("%w: content_format must be in the experimental range 65000-65535 until IANA assigns application/core-pubsub+cbor, got %d", ErrConfig, c.ContentFormat)
	case c.MaxTopics <= 0 || c.MaxTopics > maxTopicsLimit:
		return fmt.Errorf("%w: max_topics must be between 1 and %d, got %d", ErrConfig, maxTopicsLimit, c.MaxTopics)
	case c.MaxPayload <= 0 || c.MaxPayload > maxPayloadLimit:
		return fmt.Errorf("%w: max_payload must be between 1 and %d, got %d", ErrConfig, maxPayloadLimit, c.MaxPayload)
	case c.MinPublishInterval.Duration < 0 || c.MinPublishInterval.Duration > maxPublishInterval:
		return fmt.Errorf("%w: min_publish_interval must be between 0 and %v, got %v", ErrConfig, maxPublishInterval, c.MinPublishInterval.Duration)
	case c.DefaultMaxSubscribers < 0 || c.DefaultMaxSubscribers > maxSubscribersLimit:
		return fmt.Errorf("%w: default_max_subscribers must be between 0 and %d, got %d", ErrConfig, maxSubscribersLimit, c.DefaultMaxSubscribers)
	case c.DefaultExpiration.Duration < 0 || c.DefaultExpiration.Duration > maxExpirationLimit:
		return fmt.Errorf("%w: default_expiration must be between 0 and %v, got %v", ErrConfig, maxExpirationLimit, c.DefaultExpiration.Duration)
	case c.MaxAge.Duration < time.Second || c.MaxAge.Duration > maxMaxAge:
		return fmt.Errorf("%w: max_age must be between 1s and %v, got %v", ErrConfig, maxMaxAge, c.MaxAge.Duration)
	case c.MaxTopicsPerClient <= 0 || c.MaxTopicsPerClient > maxTopicsLimit:
		// Above max_topics it is harmless: max_topics bounds first.
		return fmt.Errorf("%w: max_topics_per_client must be between 1 and %d, got %d", ErrConfig, maxTopicsLimit, c.MaxTopicsPerClient)
	case c.MaxNameLength <= 0 || c.MaxNameLength > maxNameLimit:
		return fmt.Errorf("%w: max_name_length must be between 1 and %d, got %d", ErrConfig, maxNameLimit, c.MaxNameLength)
	}
	for _, l := range []struct {
		key     string
		entries []string
	}{{"admins", c.Admins}, {"publishers", c.Publishers}, {"subscribers", c.Subscribers}} {
		if _, err := acl.Parse(l.entries, nil); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, l.key, err)
		}
	}
	return nil
}

func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%w: path must be a relative path without slashes at either end, got %q", ErrConfig, p)
	}
	segs := strings.Split(p, "/")
	if len(segs) > maxPathSegments {
		return fmt.Errorf("%w: path has more than %d segments: %q", ErrConfig, maxPathSegments, p)
	}
	if segs[0] == ".well-known" {
		return fmt.Errorf("%w: path may not be under /.well-known: %q", ErrConfig, p)
	}
	for _, s := range segs {
		if !validSegment(s) || s == "." || s == ".." {
			return fmt.Errorf("%w: path segment %q must be 1-63 of A-Z a-z 0-9 . _ ~ -", ErrConfig, s)
		}
	}
	// The longest topic-data URI, "/<path>/data/<63-byte segment>", must
	// fit a CBOR text property of 255 bytes, or a topic would be
	// acknowledged and then not load after a restart.
	if n := len("/") + len(p) + len("/data/") + 63; n > 255 {
		return fmt.Errorf("%w: path %q is too long: topic-data URIs would reach %d bytes (at most 255)", ErrConfig, p, n)
	}
	return nil
}

// validSegment reports a path segment that needs no percent-encoding in a
// URI or a link-format document.
func validSegment(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '~', c == '-':
		default:
			return false
		}
	}
	return true
}
