package oscore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		text string
		err  string // substring; empty for success
	}{
		{name: "C.1.1 client", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
master_salt = "9e7ca92223786340"
sender_id = ""
recipient_id = "01"`},
		{name: "all keys", text: `master_secret = "0102030405060708090A0B0C0D0E0F10"
id_context = "37cbf3210017a2d3"
sender_id = "00"
recipient_id = "01"
send_kid_context = true
replay_window = 64
sequence_file = "client.seq"`},
		{name: "missing sender_id", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
recipient_id = "01"`, err: "sender_id missing"},
		{name: "missing master_secret", text: `sender_id = "00"
recipient_id = "01"`, err: "master_secret missing"},
		{name: "bad hex", text: `master_secret = "0102030405060708090a0b0c0d0e0f1"
sender_id = "00"
recipient_id = "01"`, err: "master_secret: want hex digits"},
		{name: "unknown key", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
sender_id = "00"
recipient_id = "01"
sender_key = "00"`, err: "unknown keys: sender_key"},
		{name: "short secret", text: `master_secret = "0102"
sender_id = "00"
recipient_id = "01"`, err: "master secret of 2 bytes"},
		{name: "equal IDs", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
sender_id = "01"
recipient_id = "01"`, err: "equal"},
		{name: "kid context without ID context", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
sender_id = "00"
recipient_id = "01"
send_kid_context = true`, err: "send_kid_context without id_context"},
		{name: "zero replay window", text: `master_secret = "0102030405060708090a0b0c0d0e0f10"
sender_id = "00"
recipient_id = "01"
replay_window = 0`, err: "replay_window"},
		{name: "wrong type", text: `master_secret = 1
sender_id = "00"
recipient_id = "01"`, err: "master_secret"},
		{name: "not TOML", text: `master_secret = `, err: "oscore: invalid security context"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.text))
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := NewContext(cfg); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want ErrConfig mentioning %q", err, tt.err)
			}
		})
	}
}

func TestParseConfigKeepsEmptyIDContext(t *testing.T) {
	cfg, err := ParseConfig([]byte(`master_secret = "0102030405060708090a0b0c0d0e0f10"
id_context = ""
sender_id = ""
recipient_id = "01"`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IDContext == nil || len(cfg.IDContext) != 0 {
		t.Errorf("IDContext = %#v, want empty and non-nil", cfg.IDContext)
	}
}

func TestWriteConfigReadConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctx.toml")
	want := Config{
		Params:         Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), IDContext: h("37cbf3210017a2d3"), SenderID: []byte{}, RecipientID: h("01")},
		SendKIDContext: true,
		ReplayWindow:   64,
		SeqStore:       FileSeqStore{Path: "ctx.seq"},
	}
	if err := WriteConfig(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.MasterSecret, want.MasterSecret) || !bytes.Equal(got.MasterSalt, want.MasterSalt) ||
		!bytes.Equal(got.IDContext, want.IDContext) || !bytes.Equal(got.SenderID, want.SenderID) ||
		!bytes.Equal(got.RecipientID, want.RecipientID) || got.SendKIDContext != want.SendKIDContext ||
		got.ReplayWindow != want.ReplayWindow {
		t.Errorf("read back %+v, want %+v", got, want)
	}
	if s, ok := got.SeqStore.(FileSeqStore); !ok || s.Path != filepath.Join(dir, "ctx.seq") {
		t.Errorf("sequence file %#v, want resolved next to the config", got.SeqStore)
	}
	if err := WriteConfig(path, want); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite: err = %v, want fs.ErrExist", err)
	}
}

func TestReadConfigRejectsOpenPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.toml")
	text := "master_secret = \"0102030405060708090a0b0c0d0e0f10\"\nsender_id = \"\"\nrecipient_id = \"01\"\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(path); !errors.Is(err, ErrFileMode) {
		t.Errorf("err = %v, want ErrFileMode", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(path); err != nil {
		t.Errorf("after chmod 600: %v", err)
	}
	if _, err := ReadConfig(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

// A zero ReplayWindow (the default) once came out as "replay_window = 0",
// which ParseConfig rightly rejects.
func TestMarshalConfigOfDefaultsParsesBack(t *testing.T) {
	b, err := MarshalConfig(Config{Params: Params{MasterSecret: secret, SenderID: []byte{}, RecipientID: h("01")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig(b); err != nil {
		t.Errorf("%v in\n%s", err, b)
	}
}
