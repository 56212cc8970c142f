package plugins

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrChecksum is wrapped by the error about a plugin executable whose
// digest is not the configured one.
var ErrChecksum = errors.New("sha256 mismatch")

// SumsFile is the digest list beside the plugins the package ships
// (/usr/lib/gatewayd/plugins/SHA256SUMS, sha256sum's format). A
// [[plugin]] without sha256 is checked against the list in its own
// directory: the package replaces the list together with the plugins, so
// an upgrade that rebuilds a plugin stays consistent, while a digest
// pinned in the configuration (a conffile the upgrade leaves alone)
// would no longer match.
const SumsFile = "SHA256SUMS"

// Verify checks what a start checks, without starting: the executable
// exists, is a regular executable file that only its owner (root or
// gatewayd's user) can change, and has the expected digest. gatewayd
// -check runs it for every [[plugin]]. c must have gone through Defaults.
func Verify(c Config) error {
	f, err := openVerified(c.Path, c.SHA256)
	if err != nil {
		return fmt.Errorf("plugins: plugin %q: %w", c.Name, err)
	}
	return f.Close()
}

// openVerified opens the plugin executable, checks that only its owner (root
// or gatewayd's user) can change it, and hashes it through the open file.
// want is the configured digest; empty, the one SumsFile in the
// executable's directory lists for it.
//
// Time of check against time of use: the returned file is what gatewayd
// then executes, through /proc/self/fd/N, so replacing the path after the
// check (rename, symlink swap, package upgrade) cannot slip another binary
// in: the kernel executes the inode that was hashed. Writing into that
// inode in place needs its owner's rights; with group- and world-writable
// files refused, the owner is root or gatewayd's own user, who can change
// the configuration anyway. Copying to a private directory would close
// that last gap too, at the price of a copy of every plugin per start on
// flash storage; it is not worth it here.
func openVerified(path, want string) (*os.File, error) {
	f, err := openOwned(path)
	if err != nil {
		return nil, err
	}
	if f.mode&0o111 == 0 {
		f.Close()
		return nil, fmt.Errorf("%s: not executable (mode %v)", path, f.mode)
	}
	source := "config says"
	if want == "" {
		if want, err = listedSum(path); err != nil {
			f.Close()
			return nil, err
		}
		source = filepath.Join(filepath.Dir(path), SumsFile) + " says"
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		f.Close()
		return nil, fmt.Errorf("%s: %w: %s %s, file has %s", path, ErrChecksum, source, want, got)
	}
	return f.File, nil
}

// ownedFile is an open regular file and its permission bits.
type ownedFile struct {
	*os.File
	mode os.FileMode
}

// openOwned opens a regular file that neither group nor others may write
// and that root or this process's user owns.
func openOwned(path string) (ownedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return ownedFile{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return ownedFile{}, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return ownedFile{}, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		f.Close()
		return ownedFile{}, fmt.Errorf("%s: writable by group or others (mode %v): refusing to use it", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		f.Close()
		return ownedFile{}, fmt.Errorf("%s: owned by uid %d, neither root nor gatewayd's user: refusing to use it", path, st.Uid)
	}
	return ownedFile{f, fi.Mode().Perm()}, nil
}

// maxSumsFile bounds the digest list read: a line per plugin.
const maxSumsFile = 64 << 10

// listedSum is the digest SumsFile in path's directory lists for path's
// file name. The list must be as safe from tampering as the plugin.
func listedSum(path string) (string, error) {
	list := filepath.Join(filepath.Dir(path), SumsFile)
	name := filepath.Base(path)
	f, err := openOwned(list)
	if err != nil {
		return "", fmt.Errorf("%s: no sha256 in its [[plugin]] table and no digest list to check it against: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxSumsFile))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// sha256sum writes "<hex>  <name>", or "<hex> *<name>" in binary mode.
		sum, file, ok := strings.Cut(line, " ")
		file = strings.TrimPrefix(strings.TrimLeft(file, " "), "*")
		if b, err := hex.DecodeString(sum); !ok || err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("%s:%d: want \"<sha256>  <file>\"", list, n)
		}
		if file == name {
			return strings.ToLower(sum), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", list, err)
	}
	return "", fmt.Errorf("%s: no sha256 in its [[plugin]] table and %s does not list %s", path, list, name)
}

// command execs the verified file f; Args[0] keeps the real path for ps.
// Pdeathsig kills the plugin when the thread that started it exits: the
// Host starts plugins from one locked OS thread that lives as long as it
// (see starter), so that is when gatewayd exits or dies.
func command(f *os.File, path string) *exec.Cmd {
	cmd := &exec.Cmd{
		Path: fmt.Sprintf("/proc/self/fd/%d", f.Fd()),
		Args: []string{path},
		Env:  []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGKILL,
		},
	}
	return cmd
}
