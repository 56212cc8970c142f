package spinel

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// go.bug.st/serial v1.8.0 waits for input with select(2) on the device fd
// and on its close-signal pipe, putting both in a fixed 1024-bit fd_set:
// with a descriptor >= 1024 its Read panics (go.bug.st/serial issue #128).
// Go raises RLIMIT_NOFILE to the hard limit at startup, so a busy daemon
// can get such descriptors. Two defences, both needed:
//
//  1. Reserve: the driver holds a few descriptors on /dev/null, taken when
//     descriptors were low. Just before opening it releases them, so the
//     kernel's lowest-free-descriptor rule hands those numbers to the port,
//     and takes them again after. A package mutex keeps two drivers from taking
//     each other's slots.
//  2. Verify: after opening, the port's descriptors are read back and, if
//     any is >= 1024, the port is closed again before anyone calls Read and
//     the attempt fails with ErrFDLimit (the driver retries with backoff).
//     The reservation can lose a race with another goroutine opening a
//     file; the check cannot.
//
// The descriptors are read with reflection from the port's unexported
// fields, tied to v1.8.0's layout; if that layout changes the check falls
// back to refusing whenever the process has any descriptor >= 1024.

// fdSetSize is FD_SETSIZE on Linux.
const fdSetSize = 1024

// reserveFDs is how many low descriptors a driver holds back. An open
// serial.Port needs 3 (the device and the two ends of its close-signal
// pipe); the rest leave room for other goroutines that open files in the
// instant the reservation is released, so they do not push the port up.
// The reservation is refilled after every open, so it is held while the
// port is open too.
const reserveFDs = 8

// ErrFDLimit reports that the serial port got a descriptor select(2)
// cannot watch.
var ErrFDLimit = errors.New("spinel: serial port descriptor >= 1024 (select limit of go.bug.st/serial)")

var openMu sync.Mutex // serialises release-open-verify across drivers

// fdReserve holds low descriptors for the next open.
type fdReserve struct {
	fds []int
}

func (r *fdReserve) fill() {
	for len(r.fds) < reserveFDs {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		if fd >= fdSetSize { // no low slot free now; not worth holding
			unix.Close(fd)
			return
		}
		r.fds = append(r.fds, fd)
	}
}

func (r *fdReserve) release() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = r.fds[:0]
}

// openPort opens path with the fd reservation and check described above.
func openPort(path string, baud int, r *fdReserve) (serial.Port, error) {
	// While the device is absent (unplugged: the common reason to retry)
	// the reservation is left alone, so retries open no window for other
	// goroutines to take the low descriptors.
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("spinel: open %s: %w", path, err)
	}
	openMu.Lock()
	defer openMu.Unlock()
	r.release()
	p, err := serial.Open(path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		r.fill()
		return nil, fmt.Errorf("spinel: open %s: %w", path, err)
	}
	if fd, ok := highFD(p); ok {
		p.Close()
		r.fill()
		return nil, fmt.Errorf("spinel: open %s: descriptor %d: %w", path, fd, ErrFDLimit)
	}
	r.fill()
	return p, nil
}

// highFD returns a descriptor of p that select(2) cannot take, if any.
func highFD(p serial.Port) (int, bool) {
	fds, known := serialFDs(p)
	if !known {
		fds = processFDs()
	}
	for _, fd := range fds {
		if fd >= fdSetSize {
			return fd, true
		}
	}
	return 0, false
}

// serialFDs reads the descriptors out of go.bug.st/serial's unix port.
func serialFDs(p serial.Port) ([]int, bool) {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	e := v.Elem()
	h := e.FieldByName("handle")
	if !h.IsValid() || h.Kind() != reflect.Int {
		return nil, false
	}
	fds := []int{int(h.Int())}
	cs := e.FieldByName("closeSignal")
	if !cs.IsValid() || cs.Kind() != reflect.Pointer || cs.IsNil() || cs.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	for _, name := range []string{"rd", "wr"} {
		f := cs.Elem().FieldByName(name)
		if !f.IsValid() || f.Kind() != reflect.Int {
			return nil, false
		}
		fds = append(fds, int(f.Int()))
	}
	return fds, true
}

// processFDs lists the process's open descriptors.
func processFDs() []int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return []int{fdSetSize} // unknown: be conservative
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	return fds
}

// ErrNoFlowControl reports a serial device that did not take RTS/CTS
// flow control.
var ErrNoFlowControl = errors.New("spinel: rts/cts flow control not taken by the device")

// setRTSCTS turns RTS/CTS hardware flow control (termios CRTSCTS) on for
// p. go.bug.st/serial v1.8.0 clears CRTSCTS when it opens a port and has
// no setting for it, so the flag is set on the port's descriptor, found
// as highFD finds it, and read back: a driver may drop a flag it does not
// implement.
func setRTSCTS(p serial.Port) error {
	fds, ok := serialFDs(p)
	if !ok || len(fds) == 0 {
		return fmt.Errorf("%w: the port's descriptor is unknown", ErrNoFlowControl)
	}
	fd := fds[0]
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoFlowControl, err)
	}
	t.Cflag |= unix.CRTSCTS
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("%w: %w", ErrNoFlowControl, err)
	}
	if t, err = unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return fmt.Errorf("%w: %w", ErrNoFlowControl, err)
	}
	if t.Cflag&unix.CRTSCTS == 0 {
		return ErrNoFlowControl
	}
	return nil
}
