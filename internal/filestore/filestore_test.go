package filestore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var layout = Layout{Prefix: "t-", Suffix: ".rec", Component: "comp", Kind: "thing"}

func open(t *testing.T, dir string) *Dir {
	t.Helper()
	d, err := Open(dir, layout, 16)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Fatalf("%s: %q, %v; want %q", path, got, err, want)
	}
}

// A record is the file Prefix+key+Suffix holding the bytes saved, 0600
// in a directory Open made; saving again replaces it, and no temporary
// file stays behind.
func TestSaveWritesOneFilePerRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d := open(t, dir)
	if err := d.Save("k1", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := d.Save("k1", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if err := d.Save("k2", []byte("other")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"t-k1.rec", "t-k2.rec"}) {
		t.Fatalf("files %q", got)
	}
	wantFile(t, filepath.Join(dir, "t-k1.rec"), "second")
	if fi, err := os.Stat(d.path("k1")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("directory mode %v, %v", fi.Mode(), err)
	}
	recs, bad := open(t, dir).Load()
	want := []Record{{"t-k1.rec", []byte("second")}, {"t-k2.rec", []byte("other")}}
	if len(bad) != 0 || !slices.EqualFunc(recs, want, func(a, b Record) bool { return a.Name == b.Name && string(a.Data) == string(b.Data) }) {
		t.Fatalf("loaded %q, bad %v", recs, bad)
	}
}

// A save syncs the new file before the rename and the directory after
// it: a rename of unsynced data can surface as an empty record after a
// power cut, and an unsynced rename can vanish.
func TestSaveSyncsFileThenRenamesThenSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	var steps []string
	d.sync = func(f *os.File) error {
		steps = append(steps, "sync "+kind(f))
		return f.Sync()
	}
	d.rename = func(oldpath, newpath string) error {
		steps = append(steps, "rename")
		return os.Rename(oldpath, newpath)
	}
	if err := d.Save("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync file", "rename", "sync dir"}; !slices.Equal(steps, want) {
		t.Fatalf("steps %q, want %q", steps, want)
	}
	steps = nil
	if err := d.Remove("k"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync dir"}; !slices.Equal(steps, want) {
		t.Fatalf("remove: steps %q, want %q", steps, want)
	}
}

func kind(f *os.File) string {
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return "dir"
	}
	return "file"
}

// A crash between the write and the rename leaves the old record and a
// temporary file with the new one; the next start loads the old record
// and removes the temporary file (the new one was never acknowledged).
func TestCrashBeforeRenameLeavesTheOldRecord(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	if err := d.Save("k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("power cut")
	d.rename = func(oldpath, _ string) error {
		// What the disk holds at the crash: the synced temporary file.
		if err := os.Link(oldpath, filepath.Join(dir, ".t-crashed.tmp")); err != nil {
			t.Fatal(err)
		}
		return crash
	}
	if err := d.Save("k", []byte("new")); !errors.Is(err, crash) {
		t.Fatalf("save: %v", err)
	}
	wantFile(t, filepath.Join(dir, ".t-crashed.tmp"), "new")
	recs, bad := open(t, dir).Load()
	if len(bad) != 0 || len(recs) != 1 || string(recs[0].Data) != "old" {
		t.Fatalf("loaded %q, bad %v", recs, bad)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"t-k.rec"}) {
		t.Fatalf("files after the restart %q", got)
	}
}

// failSync makes the fsync of a file or of the directory fail with err.
func failSync(what string) func(*Dir, error) {
	return func(d *Dir, err error) {
		d.sync = func(f *os.File) error {
			if kind(f) == what {
				return err
			}
			return f.Sync()
		}
	}
}

// A failed step is an error that says what and wraps the cause (so that
// a caller can tell a full disk, ENOSPC, from a read-only one), the old
// record stays, and no temporary file is left.
func TestSaveErrorsAreWrappedAndKeepTheOldRecord(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  func(d *Dir, err error)
		cause error
		want  string
	}{
		{"fsync of the file", failSync("file"), syscall.ENOSPC, "comp: save thing k: no space left on device"},
		{"rename", func(d *Dir, err error) {
			d.rename = func(string, string) error { return err }
		}, syscall.EROFS, "comp: save thing k: read-only file system"},
		{"fsync of the directory", failSync("dir"), syscall.EIO, "comp: sync state dir: input/output error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := open(t, dir)
			if err := d.Save("k", []byte("old")); err != nil {
				t.Fatal(err)
			}
			tc.fail(d, tc.cause)
			err := d.Save("k", []byte("new"))
			if !errors.Is(err, tc.cause) || err.Error() != tc.want {
				t.Fatalf("got %v, want %q wrapping %v", err, tc.want, tc.cause)
			}
			if tc.name != "fsync of the directory" {
				wantFile(t, d.path("k"), "old")
			}
			if got := names(t, dir); !slices.Equal(got, []string{"t-k.rec"}) {
				t.Fatalf("files %q", got)
			}
		})
	}
}

// Remove deletes the file and syncs the directory; a record that is not
// there is no error, a failure is wrapped.
func TestRemove(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	if err := d.Save("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("k"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("k"); err != nil {
		t.Fatalf("removing a missing record: %v", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("files %q", got)
	}
	if err := os.Mkdir(d.path("full"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.path("full"), "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("full"); !errors.Is(err, syscall.ENOTEMPTY) || !strings.HasPrefix(err.Error(), "comp: remove thing full: ") {
		t.Fatalf("removing what cannot be removed: %v", err)
	}
}

// Load skips, and reports by name, a record file it cannot read: over
// MaxSize or not a regular file. A truncated record is the caller's to
// judge (the store knows no format): it comes back with its name and the
// bytes that are there. Files of other names are left alone.
func TestLoadReportsUnreadableFilesByName(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("t-max.rec", strings.Repeat("m", 16))
	write("t-big.rec", strings.Repeat("b", 17))
	write("t-cut.rec", `{"half":`)
	write("other.rec", "not a record")
	write("t-x.other", "not a record")
	if err := os.Mkdir(filepath.Join(dir, "t-dir.rec"), 0o700); err != nil {
		t.Fatal(err)
	}
	recs, bad := open(t, dir).Load()
	if len(recs) != 2 || recs[0].Name != "t-cut.rec" || string(recs[0].Data) != `{"half":` || recs[1].Name != "t-max.rec" {
		t.Fatalf("loaded %q", recs)
	}
	var msgs []string
	for _, err := range bad {
		msgs = append(msgs, err.Error())
	}
	want := []string{"comp: state file t-big.rec: over 16 bytes", "comp: state file t-dir.rec: not a regular file"}
	if !slices.Equal(msgs, want) {
		t.Fatalf("bad %q, want %q", msgs, want)
	}
	if got := names(t, dir); len(got) != 6 {
		t.Fatalf("load removed files: %q", got)
	}
}

// A key that would name a file outside the directory, or none, is
// refused before anything is written.
func TestBadKeysAreRefused(t *testing.T) {
	dir := t.TempDir()
	d := open(t, filepath.Join(dir, "state"))
	for _, key := range []string{"", ".", "..", "../x", "a/b", "a\x00b"} {
		if err := d.Save(key, []byte("v")); err == nil || !strings.Contains(err.Error(), "bad key") {
			t.Errorf("save %q: %v", key, err)
		}
		if err := d.Remove(key); err == nil || !strings.Contains(err.Error(), "bad key") {
			t.Errorf("remove %q: %v", key, err)
		}
	}
	if got := names(t, dir); !slices.Equal(got, []string{"state"}) {
		t.Fatalf("files beside the state directory: %q", got)
	}
	if got := names(t, filepath.Join(dir, "state")); len(got) != 0 {
		t.Fatalf("files in the state directory: %q", got)
	}
}

// An unreadable directory is one error and no records.
func TestLoadOfAMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	d := open(t, filepath.Join(dir, "state"))
	if err := os.Remove(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	recs, bad := d.Load()
	if len(recs) != 0 || len(bad) != 1 || !errors.Is(bad[0], os.ErrNotExist) || !strings.HasPrefix(bad[0].Error(), "comp: read state dir: ") {
		t.Fatalf("recs %q, bad %v", recs, bad)
	}
}

// names lists the directory's files.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
