package testpeer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildPlugin compiles a plugin's main package (a path as `go build`
// takes it, relative to the test's directory) into the test's temporary
// directory and returns the executable's path and its SHA-256 in hex, as
// a [[plugin]] table wants them.
func BuildPlugin(t *testing.T, pkg string) (path, sum string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	sum, err := FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// FileSHA256 is the SHA-256 of the file at path in hex, as sha256sum
// prints it and a [[plugin]] table takes it.
func FileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}
