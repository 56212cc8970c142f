package observe

import (
	"errors"
	"fmt"
	"time"
)

// Config is the [observe] section of gatewayd.toml.
type Config struct {
	// MaxObservers bounds the observers of all resources together. A
	// registration beyond it is served without Observe (RFC 7641 §4.1: a
	// server may decline to add an observer).
	MaxObservers int `toml:"max_observers"`
	// MaxPerClient bounds the observers one client IP address holds, so
	// that one host cannot take the whole of MaxObservers.
	MaxPerClient int `toml:"max_per_client"`
	// CONInterval is how often, at the least, an observer gets a
	// confirmable notification when NotifyType is "non": RFC 7641 §4.5
	// asks for one at least every 24 hours so that an observer that went
	// away is eventually removed.
	CONInterval Duration `toml:"con_interval"`
	// NotifyType is the message type of notifications: "non" (with a CON
	// every CONEvery notifications and at least every CONInterval) or
	// "con" (every notification confirmable).
	NotifyType string `toml:"notify_type"`
	// CONEvery makes every CONEvery-th notification to an observer
	// confirmable when NotifyType is "non", so that an observer that went
	// away without a word is found out within a few notifications, not a
	// day: its CON goes unacknowledged, or is rejected (RFC 7641 §4.5
	// lets a server send a CON whenever it likes).
	CONEvery int `toml:"con_every"`
}

// Duration is a time.Duration written as a string in TOML, e.g. "24h".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("observe: duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Notification types of Config.NotifyType.
const (
	NotifyNON = "non"
	NotifyCON = "con"
)

// Defaults are 10000 observers, 64 per client, NON notifications with
// every 20th confirmable and a CON at least every 24 hours (RFC 7641
// §4.5).
func Defaults() Config {
	return Config{
		MaxObservers: 10000,
		MaxPerClient: 64,
		CONInterval:  Duration{24 * time.Hour},
		NotifyType:   NotifyNON,
		CONEvery:     20,
	}
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("observe: bad config")

// maxObserversLimit keeps a typo from configuring an unbounded hub.
const maxObserversLimit = 1 << 20

// maxCONEvery is the largest CONEvery: an observer counts its
// notifications since the last CON in 16 bits.
const maxCONEvery = 1<<16 - 1

// Validate checks the bounds.
func (c Config) Validate() error {
	switch {
	case c.MaxObservers <= 0 || c.MaxObservers > maxObserversLimit:
		return fmt.Errorf("%w: max_observers must be between 1 and %d, got %d", ErrConfig, maxObserversLimit, c.MaxObservers)
	case c.MaxPerClient <= 0:
		return fmt.Errorf("%w: max_per_client must be positive, got %d", ErrConfig, c.MaxPerClient)
	case c.MaxPerClient > c.MaxObservers:
		return fmt.Errorf("%w: max_per_client %d exceeds max_observers %d", ErrConfig, c.MaxPerClient, c.MaxObservers)
	case c.CONInterval.Duration <= 0 || c.CONInterval.Duration > 24*time.Hour:
		// §4.5: "at least every 24 hours".
		return fmt.Errorf("%w: con_interval must be positive and at most the 24h of RFC 7641 §4.5, got %v", ErrConfig, c.CONInterval.Duration)
	case c.NotifyType != NotifyNON && c.NotifyType != NotifyCON:
		return fmt.Errorf("%w: notify_type must be %q or %q, got %q", ErrConfig, NotifyNON, NotifyCON, c.NotifyType)
	case c.CONEvery < 1 || c.CONEvery > maxCONEvery:
		return fmt.Errorf("%w: con_every must be between 1 and %d, got %d", ErrConfig, maxCONEvery, c.CONEvery)
	}
	return nil
}

// withDefaults fills zero fields, so that a zero Config still gives a
// working, bounded hub.
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.MaxObservers <= 0 || c.MaxObservers > maxObserversLimit {
		c.MaxObservers = d.MaxObservers
	}
	if c.MaxPerClient <= 0 {
		c.MaxPerClient = d.MaxPerClient
	}
	if c.CONInterval.Duration <= 0 || c.CONInterval.Duration > 24*time.Hour {
		c.CONInterval = d.CONInterval
	}
	if c.NotifyType != NotifyCON {
		c.NotifyType = NotifyNON
	}
	if c.CONEvery < 1 || c.CONEvery > maxCONEvery {
		c.CONEvery = d.CONEvery
	}
	return c
}
