package stream

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

// sysRead and sysWrite behave as read(2) and write(2) on a non-blocking
// socket, as the reader and writer expect of them: EAGAIN when there is
// nothing to read, the bytes written, and -1 with the errno of a call
// that fails.
func TestSysReadAndWriteAreReadAndWriteOfTheSocket(t *testing.T) {
	rd, wr := tcpPair(t)
	rfd, wfd := rawFD(t, rd), rawFD(t, wr)
	buf := make([]byte, 64)
	if n, err := sysRead(rfd, buf); err != syscall.EAGAIN || n != -1 {
		t.Fatalf("read of an empty socket: %d, %v; want -1, EAGAIN", n, err)
	}
	msg := []byte("\x40\x01\x12\x34")
	if n, err := sysWrite(wfd, msg); err != nil || n != len(msg) {
		t.Fatalf("write: %d, %v", n, err)
	}
	var got []byte
	for len(got) < len(msg) { // the bytes may take a moment to cross loopback
		n, err := sysRead(rfd, buf)
		if err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %x, wrote %x", got, msg)
	}
	if n, err := sysWrite(-1, msg); !errors.Is(err, syscall.EBADF) || n != -1 {
		t.Fatalf("write to fd -1: %d, %v; want -1, EBADF", n, err)
	}
}

func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return fd
}
