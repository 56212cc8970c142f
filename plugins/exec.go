package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// ErrChecksum is wrapped by the error about a plugin executable whose
// digest is not the configured one.
var ErrChecksum = errors.New("sha256 mismatch")

// openVerified opens the plugin executable, checks that only its owner (root
// or gatewayd's user) can change it, and hashes it through the open file.
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
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("plugins: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("plugins: %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		f.Close()
		return nil, fmt.Errorf("plugins: %s: writable by group or others (mode %v): refusing to run it", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		f.Close()
		return nil, fmt.Errorf("plugins: %s: owned by uid %d, neither root nor gatewayd's user: refusing to run it", path, st.Uid)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("plugins: %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		f.Close()
		return nil, fmt.Errorf("plugins: %s: %w: config says %s, file has %s", path, ErrChecksum, want, got)
	}
	return f, nil
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
