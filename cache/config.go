package cache

import (
	"errors"
	"fmt"
	"time"
)

// Config is the [cache] section of gatewayd.toml.
type Config struct {
	// MaxBytes bounds the memory the entries account for: key, options
	// and payload of every stored response. The least recently used
	// entries are evicted beyond it.
	MaxBytes int64 `toml:"max_bytes"`
	// MaxEntryBytes is the largest single entry stored; a bigger response
	// passes through to the client without being stored.
	MaxEntryBytes int64 `toml:"max_entry_bytes"`
	// DefaultMaxAge is the freshness of a response without a Max-Age
	// option. RFC 7252 §5.10.5 fixes it at 60 s; a smaller value only
	// makes the cache more conservative, a larger one is refused.
	DefaultMaxAge time.Duration `toml:"default_max_age"`
}

// Defaults are 16 MiB in total, 64 KiB per entry and the 60 s of RFC 7252
// §5.10.5.
func Defaults() Config {
	return Config{
		MaxBytes:      16 << 20,
		MaxEntryBytes: 64 << 10,
		DefaultMaxAge: 60 * time.Second,
	}
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("cache: bad config")

// Validate checks the bounds.
func (c Config) Validate() error {
	switch {
	case c.MaxBytes <= 0:
		return fmt.Errorf("%w: max_bytes must be positive, got %d", ErrConfig, c.MaxBytes)
	case c.MaxEntryBytes <= 0:
		return fmt.Errorf("%w: max_entry_bytes must be positive, got %d", ErrConfig, c.MaxEntryBytes)
	case c.MaxEntryBytes > c.MaxBytes:
		return fmt.Errorf("%w: max_entry_bytes %d exceeds max_bytes %d", ErrConfig, c.MaxEntryBytes, c.MaxBytes)
	case c.DefaultMaxAge < time.Second || c.DefaultMaxAge > 60*time.Second:
		return fmt.Errorf("%w: default_max_age must be between 1s and the 60s of RFC 7252 §5.10.5, got %v", ErrConfig, c.DefaultMaxAge)
	}
	return nil
}

// withDefaults fills zero fields, so that a zero Config still gives a
// working, bounded cache.
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.MaxBytes <= 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.MaxEntryBytes <= 0 {
		c.MaxEntryBytes = d.MaxEntryBytes
	}
	if c.MaxEntryBytes > c.MaxBytes {
		c.MaxEntryBytes = c.MaxBytes
	}
	if c.DefaultMaxAge < time.Second || c.DefaultMaxAge > 60*time.Second {
		c.DefaultMaxAge = d.DefaultMaxAge
	}
	return c
}
