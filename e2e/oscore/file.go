package oscore

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// file is the TOML form of a security context; see README.md.
type file struct {
	MasterSecret   string  `toml:"master_secret"`
	MasterSalt     string  `toml:"master_salt,omitempty"`
	IDContext      *string `toml:"id_context,omitempty"`
	SenderID       string  `toml:"sender_id"`
	RecipientID    string  `toml:"recipient_id"`
	SendKIDContext bool    `toml:"send_kid_context,omitempty"`
	ReplayWindow   int     `toml:"replay_window,omitzero"`
	SequenceFile   string  `toml:"sequence_file,omitempty"`
}

// ParseConfig reads a security context from TOML text and validates it. A
// relative sequence_file is taken as is; ReadConfig resolves it against the
// file's directory.
func ParseConfig(data []byte) (Config, error) {
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("%w: unknown keys: %s", ErrConfig, strings.Join(keys, ", "))
	}
	for _, k := range []string{"master_secret", "sender_id", "recipient_id"} {
		if !md.IsDefined(k) {
			return Config{}, fmt.Errorf("%w: %s missing", ErrConfig, k)
		}
	}
	var cfg Config
	if cfg.MasterSecret, err = unhexField("master_secret", f.MasterSecret); err != nil {
		return Config{}, err
	}
	if cfg.MasterSalt, err = unhexField("master_salt", f.MasterSalt); err != nil {
		return Config{}, err
	}
	if f.IDContext != nil {
		if cfg.IDContext, err = unhexField("id_context", *f.IDContext); err != nil {
			return Config{}, err
		}
		if cfg.IDContext == nil {
			cfg.IDContext = []byte{} // present but empty (§3.2.1: h'', not nil)
		}
	}
	if cfg.SenderID, err = unhexField("sender_id", f.SenderID); err != nil {
		return Config{}, err
	}
	if cfg.RecipientID, err = unhexField("recipient_id", f.RecipientID); err != nil {
		return Config{}, err
	}
	cfg.SendKIDContext = f.SendKIDContext
	cfg.ReplayWindow = f.ReplayWindow
	if md.IsDefined("replay_window") && f.ReplayWindow == 0 {
		return Config{}, fmt.Errorf("%w: replay_window must be at least 1", ErrConfig)
	}
	if f.SequenceFile != "" {
		cfg.SeqStore = FileSeqStore{Path: f.SequenceFile}
	}
	if err := cfg.check(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// check validates what NewContext would reject, without deriving keys.
func (cfg Config) check() error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.SendKIDContext && cfg.IDContext == nil {
		return fmt.Errorf("%w: send_kid_context without id_context", ErrConfig)
	}
	if len(cfg.IDContext) > 255 && cfg.SendKIDContext {
		return fmt.Errorf("%w: id_context of %d bytes cannot be sent (at most 255)", ErrConfig, len(cfg.IDContext))
	}
	if cfg.ReplayWindow < 0 || cfg.ReplayWindow > maxWindow {
		return fmt.Errorf("%w: replay_window %d, want 1 to %d", ErrConfig, cfg.ReplayWindow, maxWindow)
	}
	return nil
}

func unhexField(name, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: want hex digits: %w", ErrConfig, name, err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

// ReadConfig loads a security context file. The file must not be accessible
// to group or others (ErrFileMode): it holds the Master Secret.
func ReadConfig(path string) (Config, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Config{}, fmt.Errorf("oscore: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Config{}, fmt.Errorf("%w: %s has mode %v (chmod 600)", ErrFileMode, path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("oscore: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if s, ok := cfg.SeqStore.(FileSeqStore); ok && !filepath.IsAbs(s.Path) {
		cfg.SeqStore = FileSeqStore{Path: filepath.Join(filepath.Dir(path), s.Path)}
	}
	return cfg, nil
}

// MarshalConfig renders cfg in the file format. A SeqStore other than a
// FileSeqStore cannot be written and is left out.
func MarshalConfig(cfg Config) ([]byte, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	f := file{
		MasterSecret:   hex.EncodeToString(cfg.MasterSecret),
		MasterSalt:     hex.EncodeToString(cfg.MasterSalt),
		SenderID:       hex.EncodeToString(cfg.SenderID),
		RecipientID:    hex.EncodeToString(cfg.RecipientID),
		SendKIDContext: cfg.SendKIDContext,
		ReplayWindow:   cfg.ReplayWindow,
	}
	if cfg.IDContext != nil {
		s := hex.EncodeToString(cfg.IDContext)
		f.IDContext = &s
	}
	if s, ok := cfg.SeqStore.(FileSeqStore); ok {
		f.SequenceFile = s.Path
	}
	var buf bytes.Buffer
	buf.WriteString("# OSCORE security context (RFC 8613 §3). Secret: keep mode 0600.\n")
	if err := toml.NewEncoder(&buf).Encode(f); err != nil {
		return nil, fmt.Errorf("oscore: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteConfig creates a security context file with mode 0600. It never
// overwrites: an existing file is an error wrapping fs.ErrExist.
func WriteConfig(path string, cfg Config) error {
	data, err := MarshalConfig(cfg)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("oscore: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("oscore: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("oscore: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("oscore: %w", err)
	}
	return nil
}
