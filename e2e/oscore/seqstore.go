package oscore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileSeqStore is a SeqStore in a small text file holding the decimal mark.
// StoreSeq replaces the file atomically (write, fsync, rename, fsync of the
// directory) and creates it with mode 0600.
type FileSeqStore struct {
	Path string
}

var _ SeqStore = FileSeqStore{}

// LoadSeq reads the mark; a missing file means nothing was stored.
func (s FileSeqStore) LoadSeq() (uint64, bool, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("oscore: sequence file: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("oscore: sequence file %s: %w", s.Path, err)
	}
	return v, true, nil
}

// StoreSeq durably writes the mark.
func (s FileSeqStore) StoreSeq(mark uint64) error {
	dir := filepath.Dir(s.Path)
	f, err := os.CreateTemp(dir, ".oscore-seq-*")
	if err != nil {
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	if _, err := f.WriteString(strconv.FormatUint(mark, 10) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	if err := os.Rename(tmp, s.Path); err != nil {
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("oscore: sequence file: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("oscore: sequence file: sync directory: %w", err)
	}
	return nil
}
