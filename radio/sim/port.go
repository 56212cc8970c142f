package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ErrPortClosed is returned by Plug after Close.
var ErrPortClosed = errors.New("sim: port closed")

// Port runs an RCP behind a pseudo-terminal and publishes the terminal's
// slave side at a stable path, the way udev publishes a USB dongle under
// /dev/serial/by-id/. The spinel driver opens Path like any serial device.
//
// Unplug and Plug simulate pulling the dongle out and putting it back:
// the pty is closed and the link removed, then a new pty (with a new
// /dev/pts number) appears behind the same path and the RCP powers on.
type Port struct {
	rcp  *RCP
	link string

	mu     sync.Mutex
	master *os.File      // guarded by mu; nil while unplugged
	slave  *os.File      // guarded by mu; held so the master never sees a hang-up between host opens
	serve  chan struct{} // guarded by mu; closed when the current Serve returns
	closed bool          // guarded by mu
}

// NewPort creates the pty, links dir/name to it, and starts rcp on it.
func NewPort(dir, name string, rcp *RCP) (*Port, error) {
	p := &Port{rcp: rcp, link: filepath.Join(dir, name)}
	if err := p.Plug(); err != nil {
		return nil, err
	}
	return p, nil
}

// Path is the stable device path to configure the driver with.
func (p *Port) Path() string { return p.link }

// Plug creates a new pty behind Path and starts the RCP on it. Plugging a
// plugged port does nothing.
func (p *Port) Plug() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPortClosed
	}
	if p.master != nil {
		return nil
	}
	m, s, err := pty.Open()
	if err != nil {
		return fmt.Errorf("sim: open pty: %w", err)
	}
	master, err := pollable(m)
	m.Close()
	if err != nil {
		s.Close()
		return err
	}
	// Raw from the start: in the default cooked mode the line discipline
	// would echo the RCP's own bytes back and translate CR/LF before the
	// driver has opened the port and made it raw itself.
	if err := makeRaw(s); err != nil {
		master.Close()
		s.Close()
		return err
	}
	// Replace the link atomically so the driver never sees a half-made one.
	tmp := p.link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(s.Name(), tmp); err == nil {
		err = os.Rename(tmp, p.link)
	}
	if err != nil {
		master.Close()
		s.Close()
		return fmt.Errorf("sim: link %s: %w", p.link, err)
	}
	done := make(chan struct{})
	p.master, p.slave, p.serve = master, s, done
	go func() {
		defer close(done)
		p.rcp.Serve(master)
	}()
	return nil
}

// Unplug removes Path and closes the pty: the driver's reads fail and
// reopening Path fails until Plug. Unplugging an unplugged port does
// nothing.
func (p *Port) Unplug() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unplugLocked()
}

func (p *Port) unplugLocked() error {
	if p.master == nil {
		return nil
	}
	err := os.Remove(p.link)
	p.master.Close()
	p.slave.Close()
	<-p.serve
	p.master, p.slave, p.serve = nil, nil, nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sim: unlink %s: %w", p.link, err)
	}
	return nil
}

// Termios returns the terminal settings of the pty the port publishes now,
// as the driver that opened Path left them (a pty keeps the speed and
// flow control flags it is given, and ignores them); ErrPortClosed while
// unplugged or closed.
func (p *Port) Termios() (*unix.Termios, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slave == nil {
		return nil, ErrPortClosed
	}
	t, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("sim: pty termios: %w", err)
	}
	return t, nil
}

// Close unplugs the port for good and waits for the RCP to stop serving.
// It is idempotent. The RCP itself stays joined to its medium (see
// RCP.Leave).
func (p *Port) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return p.unplugLocked()
}

// pollable returns a non-blocking duplicate of the pty master. pty.Open
// leaves the master in blocking mode (it calls Fd), and a blocking Read on
// an *os.File is not interrupted by Close; through Go's poller it is, and
// write deadlines work.
func pollable(m *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sim: dup pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sim: pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), m.Name()), nil
}

func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("sim: pty termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("sim: pty raw mode: %w", err)
	}
	return nil
}
