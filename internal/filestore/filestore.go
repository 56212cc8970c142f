// Package filestore keeps records durably as one file per record in a
// directory, each replaced atomically: a temporary file is written and
// fsynced, renamed over the record, and the directory is fsynced, so that
// a crash at any point leaves the old record or the new one, never a mix.
// It is the state directory of the resource directory (rd) and of the
// pub-sub broker (observe/pubsub); the record's encoding is theirs.
package filestore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Store is what a caller keeps its records in: a *Dir, or a stand-in in
// its tests.
type Store interface {
	Save(key string, data []byte) error
	Remove(key string) error
	Load() ([]Record, []error)
}

var _ Store = (*Dir)(nil)

// Layout names a directory's files and words its errors.
type Layout struct {
	// Prefix and Suffix surround a record's key in its file name:
	// Prefix+key+Suffix. Temporary files are "."+Prefix+"*.tmp".
	Prefix, Suffix string
	// Component and Kind start the errors: "<Component>: save <Kind>
	// <key>: …", "<Component>: state file <name>: …".
	Component, Kind string
}

// Record is one record file as loaded: its file name and its contents.
type Record struct {
	Name string
	Data []byte
}

// Dir is a directory of records. Save and Remove return once the change
// is on stable storage. A Dir holds no lock: callers serialise changes to
// one key.
type Dir struct {
	dir     string
	layout  Layout
	maxSize int64
	temp    string // os.CreateTemp pattern of a record being written

	// The steps of a save that a test makes fail; the os functions
	// otherwise.
	sync   func(*os.File) error
	rename func(oldpath, newpath string) error
}

// Open makes dir (0750) if it does not exist and returns its store, in
// which a record file over maxSize bytes is reported, not read.
func Open(dir string, l Layout, maxSize int64) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("%s: state dir: %w", l.Component, err)
	}
	return &Dir{
		dir: dir, layout: l, maxSize: maxSize, temp: "." + l.Prefix + "*.tmp",
		sync: (*os.File).Sync, rename: os.Rename,
	}, nil
}

// path is the file of the record key.
func (d *Dir) path(key string) string {
	return filepath.Join(d.dir, d.layout.Prefix+key+d.layout.Suffix)
}

// checkKey refuses a key that would name a file outside the directory
// or none at all; callers make keys that never do.
func checkKey(key string) error {
	if key == "" || strings.ContainsAny(key, "/\x00") || key == "." || key == ".." {
		return fmt.Errorf("bad key %q", key)
	}
	return nil
}

// Save replaces the record key with data.
func (d *Dir) Save(key string, data []byte) error {
	if err := d.write(key, data); err != nil {
		return fmt.Errorf("%s: save %s %s: %w", d.layout.Component, d.layout.Kind, key, err)
	}
	return d.syncDir()
}

func (d *Dir) write(key string, data []byte) (err error) {
	if err := checkKey(key); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.dir, d.temp)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = d.sync(f); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return d.rename(tmp, d.path(key))
}

// Remove deletes the record key; one that is not there is no error.
func (d *Dir) Remove(key string) error {
	err := checkKey(key)
	if err == nil {
		err = os.Remove(d.path(key))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: remove %s %s: %w", d.layout.Component, d.layout.Kind, key, err)
	}
	return d.syncDir()
}

// syncDir makes a rename or a removal durable.
func (d *Dir) syncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return fmt.Errorf("%s: sync state dir: %w", d.layout.Component, err)
	}
	defer f.Close()
	if err := d.sync(f); err != nil {
		return fmt.Errorf("%s: sync state dir: %w", d.layout.Component, err)
	}
	return nil
}

// Load returns the records in file name order and, apart, an error for
// every record file that could not be read (not a regular file, over
// maxSize, unreadable), naming it; the others load regardless. Temporary
// files, left by a crash before their rename and so never acknowledged,
// are removed. Other files are ignored.
func (d *Dir) Load() ([]Record, []error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: read state dir: %w", d.layout.Component, err)}
	}
	var recs []Record
	var bad []error
	for _, e := range entries {
		name := e.Name()
		if ok, _ := filepath.Match(d.temp, name); ok {
			_ = os.Remove(filepath.Join(d.dir, name))
			continue
		}
		if !strings.HasPrefix(name, d.layout.Prefix) || !strings.HasSuffix(name, d.layout.Suffix) {
			continue
		}
		b, err := d.read(e)
		if err != nil {
			bad = append(bad, fmt.Errorf("%s: state file %s: %w", d.layout.Component, name, err))
			continue
		}
		recs = append(recs, Record{Name: name, Data: b})
	}
	return recs, bad
}

func (d *Dir) read(e os.DirEntry) ([]byte, error) {
	if !e.Type().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(filepath.Join(d.dir, e.Name()))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, d.maxSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > d.maxSize {
		return nil, fmt.Errorf("over %d bytes", d.maxSize)
	}
	return b, nil
}
