//go:build linux && !race

package stream

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are read(2) and write(2) of a connection's socket
// as raw system calls, which keep the goroutine's P. The runtime's
// sysmon takes back a P that stays in a system call for a tick and hands
// it to another thread; under load, where the loopback write of a reply
// also runs the reader's end, it did so thousands of times a second, and
// each hand-off was a thread to wake. Raw calls suit only calls that never
// block: Go's poller makes every socket it holds non-blocking, and these
// run only inside a RawConn's Read or Write, on its descriptor.
//
// The race detector's build uses syscall.Read and Write instead
// (sys_other.go): they tell the detector that what one goroutine wrote to
// a socket happens before what another reads from one.
func sysRead(fd int, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func sysWrite(fd int, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
