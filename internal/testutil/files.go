package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// CopyDir copies the regular files of src (a committed testdata
// directory) into a new temporary directory and returns it.
func CopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	for name, data := range ReadDir(t, src) {
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// EmptyDir removes the regular files in dir.
func EmptyDir(t testing.TB, dir string) {
	t.Helper()
	for name := range ReadDir(t, dir) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// ReadDir returns the contents of the regular files in dir by name.
func ReadDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// SameFiles fails t unless dir holds the files of want, no others, with
// the same names and bytes, each with permissions perm.
func SameFiles(t testing.TB, dir, want string, perm fs.FileMode) {
	t.Helper()
	got, exp := ReadDir(t, dir), ReadDir(t, want)
	for name, b := range exp {
		if g, ok := got[name]; !ok || string(g) != string(b) {
			t.Errorf("%s: %q, want %q", name, g, b)
		}
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	for name := range got {
		if _, ok := exp[name]; !ok {
			t.Errorf("%s: not expected", name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			t.Errorf("%s: not a regular file", e.Name())
		}
	}
}
