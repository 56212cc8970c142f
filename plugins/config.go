package plugins

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

// DefaultDir is where plugins live; a relative path resolves against it.
const DefaultDir = "/usr/lib/gatewayd/plugins"

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("plugins: invalid config")

// Config is one `[[plugin]]` table.
type Config struct {
	Name string `toml:"name"` // names the plugin in logs, stats and the "plugin:<name>" radio driver
	Path string `toml:"path"` // the executable; relative paths resolve against DefaultDir
	// SHA256 is the executable's SHA-256 digest in hex, checked before
	// every start: gatewayd runs nothing it has not checked. Empty, the
	// digest is the one SumsFile in the executable's directory lists,
	// which is how the plugins shipped in the package are checked.
	SHA256 string `toml:"sha256"`
	// MaxObservations bounds the observations the plugin holds through
	// Host.Observe at once. The Observe hub applies it to the plugin's
	// address in place of its max_per_client, which is meant for
	// internet clients: a bridge that observes a hundred resources is one
	// client, and one the operator installed. The hub's max_observers
	// still bounds everyone together. Default 1024.
	MaxObservations int `toml:"max_observations"`
	// MaxBody bounds, in bytes, a whole representation or request body
	// that crosses the plugin's boundary through Host.Do and
	// Host.Observe, which move bodies larger than a block in RFC 7959
	// blocks. A larger one is refused whole, never cut short: a request
	// body with 4.13, a representation with 5.02. Default 1 MiB, at most
	// 4 MiB.
	MaxBody int `toml:"max_body"`
	// BlockSize is the largest block Host.Do and Host.Observe send or ask
	// for: 16 to 1024 bytes, a power of two. Default 1024.
	BlockSize int `toml:"block_size"`
	// Config is passed to the plugin's Init as JSON; its keys are the
	// plugin's business.
	Config Table `toml:"config"`
}

// DefaultMaxObservations is MaxObservations when the key is absent.
const DefaultMaxObservations = 1024

// Bounds of MaxBody and BlockSize.
const (
	DefaultMaxBody   = blockwise.DefaultMaxBody
	MaxMaxBody       = 4 << 20 // what one gRPC message to or from a plugin carries (wire.MaxMessage)
	DefaultBlockSize = blockwise.DefaultBlockSize
)

// Table is a plugin's config table, kept as decoded. Its keys are the
// plugin's to check (its Init refuses unknown ones), not gatewayd's.
type Table map[string]any

// UnmarshalTOML keeps the table whole. Being an Unmarshaler also tells the
// TOML decoder that every key below it is used: gatewayd refuses unknown
// keys, and the decoder counts keys inside arrays of tables stored in a
// plain map ([[plugin.config.up]]) as unknown.
func (t *Table) UnmarshalTOML(data any) error {
	m, ok := data.(map[string]any)
	if !ok {
		return fmt.Errorf("%w: config: want a table, not %T", ErrConfig, data)
	}
	*t = m
	return nil
}

// Defaults returns c with Path made absolute and SHA256 in lower case.
func (c Config) Defaults() Config {
	if c.Path != "" && !filepath.IsAbs(c.Path) {
		c.Path = filepath.Join(DefaultDir, c.Path)
	}
	if c.Path != "" {
		c.Path = filepath.Clean(c.Path)
	}
	c.SHA256 = strings.ToLower(strings.TrimSpace(c.SHA256))
	if c.MaxObservations == 0 {
		c.MaxObservations = DefaultMaxObservations
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	return c
}

// Validate reports the first problem with c, naming the key. Call it on
// c.Defaults().
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: [[plugin]] %q: "+format, append([]any{ErrConfig, c.Name}, a...)...)
	}
	if c.Name == "" {
		return bad("name is required")
	}
	if strings.IndexFunc(c.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		return bad("name: want letters, digits, '-', '_' or '.'")
	}
	if c.Path == "" {
		return bad("path is required")
	}
	if !filepath.IsAbs(c.Path) {
		return bad("path = %q: want an absolute path (call Defaults)", c.Path)
	}
	if b, err := hex.DecodeString(c.SHA256); c.SHA256 != "" && (err != nil || len(b) != 32) {
		return bad("sha256 = %q: want 64 hex digits (sha256sum %s)", c.SHA256, c.Path)
	}
	if c.MaxObservations <= 0 {
		return bad("max_observations = %d: want a positive number", c.MaxObservations)
	}
	if c.MaxBody <= 0 || c.MaxBody > MaxMaxBody {
		return bad("max_body = %d: want 1 to %d bytes", c.MaxBody, MaxMaxBody)
	}
	if c.BlockSize < blockwise.MinBlockSize || c.BlockSize > blockwise.DefaultBlockSize || c.BlockSize&(c.BlockSize-1) != 0 {
		return bad("block_size = %d: want 16, 32, 64, 128, 256, 512 or 1024", c.BlockSize)
	}
	if _, err := c.configJSON(); err != nil {
		return bad("config: %v", err)
	}
	return nil
}

// configJSON is the config table as the plugin gets it.
func (c Config) configJSON() ([]byte, error) {
	if c.Config == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(c.Config)
}
