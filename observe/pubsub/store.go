package pubsub

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// record is one topic as stored in the state directory: its
// configuration (the draft's CBOR map, as the broker would send it) and
// its last publication, byte for byte.
type record struct {
	Version int    `cbor:"0,keyasint"`
	ID      string `cbor:"1,keyasint"`
	Config  []byte `cbor:"2,keyasint"`
	Full    bool   `cbor:"3,keyasint"`
	HasCF   bool   `cbor:"4,keyasint"`
	CF      uint16 `cbor:"5,keyasint"`
	Payload []byte `cbor:"6,keyasint"`
	Seq     uint32 `cbor:"7,keyasint"`
	// Creator is acl.Client.Key of who created the topic, for
	// max_topics_per_client across restarts. Files written before it
	// existed have none: their topics are charged to no one.
	Creator string `cbor:"8,keyasint,omitempty"`
}

const recordVersion = 1

// store keeps records durably. save and remove return only once the change
// is on stable storage.
type store interface {
	save(id string, rec []byte) error
	remove(id string) error
	// load returns the stored records and, apart, every file that could
	// not be read.
	load() (recs [][]byte, bad []error)
}

// fileStore keeps one file per topic in a directory: topic-<id>.cbor,
// replaced atomically (temporary file, fsync, rename, fsync of the
// directory), so that a crash leaves either the old or the new record.
type fileStore struct {
	dir     string
	maxSize int64
}

const (
	recordPrefix = "topic-"
	recordSuffix = ".cbor"
	tempPattern  = ".topic-*.tmp"
)

func newFileStore(dir string, maxSize int64) (*fileStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("pubsub: state dir: %w", err)
	}
	return &fileStore{dir: dir, maxSize: maxSize}, nil
}

func (s *fileStore) path(id string) string {
	return filepath.Join(s.dir, recordPrefix+id+recordSuffix)
}

func (s *fileStore) save(id string, rec []byte) (err error) {
	f, err := os.CreateTemp(s.dir, tempPattern)
	if err != nil {
		return fmt.Errorf("pubsub: save topic %s: %w", id, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(rec); err != nil {
		return fmt.Errorf("pubsub: save topic %s: %w", id, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("pubsub: save topic %s: %w", id, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("pubsub: save topic %s: %w", id, err)
	}
	if err = os.Rename(tmp, s.path(id)); err != nil {
		return fmt.Errorf("pubsub: save topic %s: %w", id, err)
	}
	return s.syncDir()
}

func (s *fileStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pubsub: remove topic %s: %w", id, err)
	}
	return s.syncDir()
}

// syncDir makes a rename or a removal durable.
func (s *fileStore) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("pubsub: sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pubsub: sync state dir: %w", err)
	}
	return nil
}

func (s *fileStore) load() ([][]byte, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("pubsub: read state dir: %w", err)}
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
			bad = append(bad, fmt.Errorf("pubsub: state file %s: not a regular file", name))
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
		return nil, fmt.Errorf("pubsub: state file %s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("pubsub: state file %s: %w", name, err)
	}
	if int64(len(b)) > s.maxSize {
		return nil, fmt.Errorf("pubsub: state file %s: over %d bytes", name, s.maxSize)
	}
	return b, nil
}

// memStore keeps records in memory: for tests and benchmarks that measure
// the broker without a disk.
type memStore struct{}

func (memStore) save(string, []byte) error { return nil }
func (memStore) remove(string) error       { return nil }
func (memStore) load() ([][]byte, []error) { return nil, nil }

// recMode decodes a state file with the same limits as a request.
var recMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err) // static options
	}
	return dm
}()

func encodeRecord(r *record) ([]byte, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("pubsub: encode record: %w", err)
	}
	return b, nil
}

func decodeRecord(b []byte) (*record, error) {
	var r record
	if err := recMode.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("pubsub: decode record: %w", err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("pubsub: record version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}
