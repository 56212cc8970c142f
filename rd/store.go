package rd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// record is one registration as stored in the state directory.
type record struct {
	Version int       `json:"version"`
	ID      string    `json:"id"`
	EP      string    `json:"ep"`
	D       string    `json:"d,omitempty"`
	Base    string    `json:"base,omitempty"` // explicit base; "" when taken from From
	From    string    `json:"from"`           // address and port it registered or last updated from
	Secure  bool      `json:"secure,omitempty"`
	Owner   string    `json:"owner"`
	LT      uint32    `json:"lt"`
	Expires time.Time `json:"expires"`
	Updated time.Time `json:"updated"`
	Simple  bool      `json:"simple,omitempty"`
	Proxy   bool      `json:"proxy,omitempty"`
	Attrs   []Param   `json:"attrs,omitempty"`
	Links   string    `json:"links"` // the link-format document as registered
}

const recordVersion = 1

// store keeps records durably. save and remove return once the change is
// on stable storage.
type store interface {
	save(id string, rec []byte) error
	remove(id string) error
	// load returns the stored records and, apart, every file that could
	// not be read.
	load() (recs [][]byte, bad []error)
}

// fileStore keeps one file per registration in a directory,
// reg-<id>.json, replaced atomically (temporary file, fsync, rename,
// fsync of the directory): a crash leaves the old record or the new one.
type fileStore struct {
	dir     string
	maxSize int64
}

const (
	recordPrefix = "reg-"
	recordSuffix = ".json"
	tempPattern  = ".reg-*.tmp"
)

func newFileStore(dir string, maxSize int64) (*fileStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("rd: state dir: %w", err)
	}
	return &fileStore{dir: dir, maxSize: maxSize}, nil
}

func (s *fileStore) path(id string) string {
	return filepath.Join(s.dir, recordPrefix+id+recordSuffix)
}

func (s *fileStore) save(id string, rec []byte) (err error) {
	f, err := os.CreateTemp(s.dir, tempPattern)
	if err != nil {
		return fmt.Errorf("rd: save registration %s: %w", id, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(rec); err != nil {
		return fmt.Errorf("rd: save registration %s: %w", id, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("rd: save registration %s: %w", id, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("rd: save registration %s: %w", id, err)
	}
	if err = os.Rename(tmp, s.path(id)); err != nil {
		return fmt.Errorf("rd: save registration %s: %w", id, err)
	}
	return s.syncDir()
}

func (s *fileStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rd: remove registration %s: %w", id, err)
	}
	return s.syncDir()
}

// syncDir makes a rename or a removal durable.
func (s *fileStore) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("rd: sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("rd: sync state dir: %w", err)
	}
	return nil
}

func (s *fileStore) load() ([][]byte, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("rd: read state dir: %w", err)}
	}
	var recs [][]byte
	var bad []error
	for _, e := range entries {
		name := e.Name()
		if ok, _ := filepath.Match(tempPattern, name); ok {
			// Left by a crash between create and rename: never acknowledged.
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasPrefix(name, recordPrefix) || !strings.HasSuffix(name, recordSuffix) {
			continue
		}
		if !e.Type().IsRegular() {
			bad = append(bad, fmt.Errorf("rd: state file %s: not a regular file", name))
			continue
		}
		b, err := s.read(name)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		recs = append(recs, b)
	}
	return recs, bad
}

func (s *fileStore) read(name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return nil, fmt.Errorf("rd: state file %s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("rd: state file %s: %w", name, err)
	}
	if int64(len(b)) > s.maxSize {
		return nil, fmt.Errorf("rd: state file %s: over %d bytes", name, s.maxSize)
	}
	return b, nil
}

func encodeRecord(r *record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("rd: encode record: %w", err)
	}
	return b, nil
}

func decodeRecord(b []byte) (*record, error) {
	var r record
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("rd: decode record: %w", err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("rd: record version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}
