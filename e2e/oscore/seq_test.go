package oscore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// memStore is a SeqStore in memory that can be told to fail.
type memStore struct {
	mark   uint64
	ok     bool
	stores []uint64
	fail   error
}

func (s *memStore) LoadSeq() (uint64, bool, error) { return s.mark, s.ok, nil }

func (s *memStore) StoreSeq(mark uint64) error {
	if s.fail != nil {
		return s.fail
	}
	s.mark, s.ok = mark, true
	s.stores = append(s.stores, mark)
	return nil
}

func storeConfig(store SeqStore, k, f uint64) Config {
	return Config{
		Params:           Params{MasterSecret: secret, SenderID: h("01"), RecipientID: h("02")},
		SeqStore:         store,
		SeqStoreInterval: k,
		SeqStoreMargin:   f,
	}
}

func send(t *testing.T, c *Context, n int) (last uint64) {
	t.Helper()
	for range n {
		m, _, err := c.ProtectRequest(&coap.Message{Code: coap.GET})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.Options.Get(coap.OSCORE)
		ov, err := ParseOptionValue(v)
		if err != nil {
			t.Fatal(err)
		}
		last = decodePIV(ov.PIV)
	}
	return last
}

func TestSeqStoreStoresEveryKAndSkipsAheadOnRestart(t *testing.T) {
	store := &memStore{}
	c, err := NewContext(storeConfig(store, 10, 0))
	if err != nil {
		t.Fatal(err)
	}
	if last := send(t, c, 25); last != 24 {
		t.Fatalf("last Partial IV %d, want 24", last)
	}
	if want := []uint64{10, 20, 30}; len(store.stores) != 3 || store.stores[0] != 10 || store.stores[2] != 30 {
		t.Fatalf("stored %v, want %v", store.stores, want)
	}
	// Restart: sequence numbers 25 to 29 may have been used; start at 30.
	c2, err := NewContext(storeConfig(store, 10, 5))
	if err != nil {
		t.Fatal(err)
	}
	if got := send(t, c2, 1); got != 35 {
		t.Errorf("first Partial IV after restart %d, want 35 (mark 30 + margin 5)", got)
	}
	if store.mark != 45 {
		t.Errorf("mark after restart %d, want 45", store.mark)
	}
	// A crash right after the restart's first message must not reuse 35.
	c3, err := NewContext(storeConfig(store, 10, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := send(t, c3, 1); got != 45 {
		t.Errorf("first Partial IV after second restart %d, want 45", got)
	}
}

func TestSeqStoreFailureUsesNoNumber(t *testing.T) {
	store := &memStore{fail: errors.New("disk full")}
	c, err := NewContext(storeConfig(store, 10, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ProtectRequest(&coap.Message{Code: coap.GET}); !errors.Is(err, ErrSeqStore) {
		t.Fatalf("err = %v, want ErrSeqStore", err)
	}
	store.fail = nil
	if got := send(t, c, 1); got != 0 {
		t.Errorf("first Partial IV after the store recovered %d, want 0", got)
	}
}

func TestSeqExhausted(t *testing.T) {
	c, err := NewContext(storeConfig(nil, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	c.seq = MaxSeq
	if got := send(t, c, 1); got != MaxSeq {
		t.Fatalf("Partial IV %d, want %d", got, uint64(MaxSeq))
	}
	if _, _, err := c.ProtectRequest(&coap.Message{Code: coap.GET}); !errors.Is(err, ErrSeqExhausted) {
		t.Errorf("err = %v, want ErrSeqExhausted", err)
	}
	if _, err := NewContext(storeConfig(&memStore{mark: MaxSeq, ok: true}, 10, 5)); !errors.Is(err, ErrSeqExhausted) {
		t.Errorf("restart past the end: err = %v, want ErrSeqExhausted", err)
	}
}

func TestFileSeqStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	s := FileSeqStore{Path: path}
	if _, ok, err := s.LoadSeq(); ok || err != nil {
		t.Fatalf("missing file: ok=%v err=%v", ok, err)
	}
	for _, v := range []uint64{100, 1 << 39} {
		if err := s.StoreSeq(v); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.LoadSeq()
		if err != nil || !ok || got != v {
			t.Fatalf("LoadSeq = %d %v %v, want %d", got, ok, err, v)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadSeq(); err == nil {
		t.Error("garbage sequence file loaded")
	}
	if _, err := NewContext(storeConfig(s, 10, 0)); !errors.Is(err, ErrSeqStore) {
		t.Errorf("NewContext with a garbage sequence file: err = %v, want ErrSeqStore", err)
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Params
	}{
		{"short secret", Params{MasterSecret: make([]byte, 15), SenderID: h("01"), RecipientID: h("02")}},
		{"long sender ID", Params{MasterSecret: secret, SenderID: make([]byte, 8), RecipientID: h("02")}},
		{"long recipient ID", Params{MasterSecret: secret, SenderID: h("01"), RecipientID: make([]byte, 8)}},
		{"equal IDs", Params{MasterSecret: secret, SenderID: h("01"), RecipientID: h("01")}},
		{"both empty", Params{MasterSecret: secret}},
	}
	for _, tt := range tests {
		if _, err := NewContext(Config{Params: tt.p}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tt.name, err)
		}
	}
	ok := Params{MasterSecret: secret, SenderID: make([]byte, 7), RecipientID: []byte{}}
	if _, err := NewContext(Config{Params: ok}); err != nil {
		t.Errorf("7-byte sender ID: %v", err)
	}
	if _, err := NewContext(Config{Params: ok, SendKIDContext: true}); !errors.Is(err, ErrConfig) {
		t.Errorf("kid context without ID context: err = %v", err)
	}
	if _, err := NewContext(Config{Params: ok, ReplayWindow: -1}); !errors.Is(err, ErrConfig) {
		t.Errorf("negative replay window: err = %v", err)
	}
}

func TestEmptyIDContextDiffersFromNone(t *testing.T) {
	none, err := NewContext(Config{Params: Params{MasterSecret: secret, SenderID: h("01"), RecipientID: h("02")}})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := NewContext(Config{Params: Params{MasterSecret: secret, IDContext: []byte{}, SenderID: h("01"), RecipientID: h("02")}})
	if err != nil {
		t.Fatal(err)
	}
	if string(none.senderKey) == string(empty.senderKey) {
		t.Error("an empty ID Context derived the same key as none (§3.2.1: h'' versus nil)")
	}
	if none.IDContext() != nil || empty.IDContext() == nil {
		t.Error("IDContext accessor loses the nil/empty distinction")
	}
}
