//go:build !linux || race

package stream

import "syscall"

// sysRead and sysWrite: see sys_linux.go.
func sysRead(fd int, b []byte) (int, error)  { return syscall.Read(fd, b) }
func sysWrite(fd int, b []byte) (int, error) { return syscall.Write(fd, b) }
