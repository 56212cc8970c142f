//go:build linux

package coap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var _ BatchReader = (*UDP)(nil)

// NewBatch returns a recvmmsg(2) reader of up to n datagrams, each up to
// 64 KiB, the most a UDP datagram can carry, so none is ever truncated.
// The slots are mapped apart from the Go heap: pages no datagram reached
// are never touched, so memory grows by the size of the datagrams, not of
// the slots; the pages that datagrams larger than a page touched are
// given back when the reader next finds the socket empty (release), so
// that a flood of large datagrams does not leave each reader holding its
// slots; and the collector, which would count all 512 KiB of a reader's
// slots as live heap and let the heap grow by as much again before it
// collects, does not see them. Close unmaps them.
func (u *UDP) NewBatch(n int) (Batch, error) {
	rc, err := u.c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("coap: batch reader: %w", err)
	}
	n = max(n, 1)
	mem, err := unix.Mmap(-1, 0, n*maxDatagram, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("coap: batch reader: %w", err)
	}
	r := &mmsgBatch{
		c:     u.c,
		rc:    rc,
		hs:    make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		bufs:  make([][]byte, n),
		mem:   mem,
	}
	for i := range n {
		r.bufs[i] = r.mem[i*maxDatagram : (i+1)*maxDatagram : (i+1)*maxDatagram]
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(maxDatagram)
		r.hs[i].Hdr.Iov = &r.iovs[i]
		r.hs[i].Hdr.SetIovlen(1)
	}
	r.recv = r.recvmmsg // one closure for the reader's lifetime
	return r, nil
}

type mmsgBatch struct {
	c     *net.UDPConn
	rc    syscall.RawConn
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte
	mem   []byte // the slots of bufs, in one mapping
	deep  bool   // a datagram larger than a page was read since the last release
	recv  func(fd uintptr) bool
	eq    *errQueue // made at the first ICMP report

	releases atomic.Int64 // how many times release gave pages back

	n       int
	errno   syscall.Errno
	reports []ICMPReport // read with errno, from the error queue
}

// errQueue returns the reader's error queue reader.
func (r *mmsgBatch) errQueue() *errQueue {
	if r.eq == nil {
		r.eq = new(errQueue)
	}
	return r.eq
}

// recvmmsg is the RawConn.Read callback: false means "nothing waiting",
// and the runtime's poller parks the goroutine until there is.
func (r *mmsgBatch) recvmmsg(fd uintptr) bool {
	for i := range r.hs {
		r.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hs[i].Hdr.Flags = 0
		r.hs[i].Len = 0
	}
	// A raw call, which keeps the goroutine's P: MSG_DONTWAIT never
	// blocks, and the runtime's sysmon has no P in a system call to take
	// back and hand to another thread (see rawSender.sendto).
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EWOULDBLOCK {
		if r.deep {
			r.release()
		}
		return false
	}
	r.n, r.errno, r.reports = int(n), e, nil
	for i := range r.n {
		r.deep = r.deep || int(r.hs[i].Len) > pageSize
	}
	if e != 0 && e != unix.EINTR {
		// Most likely the pending error of an ICMP report: its report
		// is on the error queue, read while the descriptor is at hand.
		r.reports = r.errQueue().drain(fd)
	}
	return true
}

// release gives the slots' pages back to the kernel (MADV_DONTNEED): the
// reader is about to wait, so nothing in them is needed any more, and the
// next datagrams fault in fresh zeroed pages, as many as they fill.
func (r *mmsgBatch) release() {
	r.deep = false
	if unix.Madvise(r.mem, unix.MADV_DONTNEED) == nil {
		r.releases.Add(1)
	}
}

// pageSize is the size of the pages release gives back.
var pageSize = os.Getpagesize()

// Close unmaps the slots; the batch's goroutine has stopped reading.
func (r *mmsgBatch) Close() error {
	if r.mem == nil {
		return nil
	}
	clear(r.bufs)
	for i := range r.iovs {
		r.iovs[i].Base = nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	if err != nil {
		return fmt.Errorf("coap: batch reader: %w", err)
	}
	return nil
}

func (r *mmsgBatch) Read() (int, error) {
	for {
		if err := r.rc.Read(r.recv); err != nil {
			return 0, r.readFailed(err)
		}
		switch {
		case r.errno == unix.EINTR:
			continue
		case len(r.reports) > 0 || icmpErrno(r.errno):
			r.eq.err.Reports = r.reports
			return 0, &r.eq.err
		case r.errno != 0:
			return 0, fmt.Errorf("coap: recvmmsg: %w", error(r.errno))
		case r.n == 0:
			return 0, errors.New("coap: recvmmsg read nothing")
		}
		return r.n, nil
	}
}

// readFailed is Read's handling of the runtime refusing to read. A read
// deadline that passed is a sender's wake-up call (wakeReader): the error
// queue has a report whose pending error a send took. Otherwise the
// socket was closed, or the runtime refuses without a word about the
// cause after an event that was an error alone (EPOLLERR: a report queued
// while there was nothing to read and the send buffer was full) until the
// descriptor's next event: the error queue is read aside then too, so
// that its reports are not held up and the socket's error is cleared; if
// there was nothing, the endpoint pauses before reading again, as for any
// failing read, and the next event (a datagram, room in the send buffer)
// lets the reader wait again.
func (r *mmsgBatch) readFailed(err error) error {
	if isClosedErr(err) {
		return err
	}
	woken := errors.Is(err, os.ErrDeadlineExceeded)
	if woken {
		_ = r.c.SetReadDeadline(time.Time{})
	}
	var reps []ICMPReport
	if cerr := r.rc.Control(func(fd uintptr) { reps = r.errQueue().drain(fd) }); cerr != nil {
		return cerr
	}
	if len(reps) == 0 && !woken {
		return err
	}
	r.eq.err.Reports = reps
	return &r.eq.err
}

func (r *mmsgBatch) Datagram(i int) ([]byte, netip.AddrPort, bool) {
	h := &r.hs[i]
	b := r.bufs[i][:min(int(h.Len), len(r.bufs[i]))]
	truncated := h.Hdr.Flags&unix.MSG_TRUNC != 0
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return b, netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), netPort(&s4.Port)), truncated
	case unix.AF_INET6:
		// IPv4 peers of a dual-stack socket are reported as IPv4, as
		// ReadFrom does.
		return b, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), netPort(&sa.Port)), truncated
	}
	return b, netip.AddrPort{}, truncated
}

// netPort reads a sockaddr's port, which is in network byte order;
// setNetPort writes one.
func netPort(p *uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:])
}

func setNetPort(p *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(p))[:], port)
}

// rawSender sends with sendto(2) on the socket's descriptor directly. The
// runtime's path takes a per-descriptor write lock, and a proxy writes to
// one socket from several goroutines at once (the readers of the listener
// and of the upstream socket): waiting for that lock, and waking the next
// writer, cost about a tenth of a forwarded request's CPU. The kernel
// needs no such lock for a datagram socket. mu keeps the descriptor from
// being closed, and its number reused, under a send.
type rawSender struct {
	mu     sync.RWMutex
	fd     int // -1: no raw path
	closed bool
	wake   func() // the socket's wakeReader
}

func (r *rawSender) init(c *net.UDPConn) {
	r.fd = -1
	r.wake = func() { wakeReader(c) }
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { r.fd = int(fd) })
}

// sendto sends b to `to` (already in the socket's family: IPv4-mapped on
// an IPv6 socket). sent false means the caller must send it another way:
// the socket's buffer is full (EAGAIN), there is no raw path, or the
// address has a zone (a link-local peer), whose interface index the
// runtime's path looks up.
func (r *rawSender) sendto(b []byte, to netip.AddrPort) (sent bool, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 || to.Addr().Zone() != "" {
		return false, nil
	}
	if r.closed {
		return true, fmt.Errorf("coap: write to %v: %w", to, net.ErrClosed)
	}
	var sa unix.RawSockaddrInet6 // large enough for either family
	var salen uintptr
	if to.Addr().Is4() {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		s4.Family = unix.AF_INET
		s4.Addr = to.Addr().As4()
		setNetPort(&s4.Port, to.Port())
		salen = unix.SizeofSockaddrInet4
	} else {
		sa.Family = unix.AF_INET6
		sa.Addr = to.Addr().As16()
		setNetPort(&sa.Port, to.Port())
		salen = unix.SizeofSockaddrInet6
	}
	retried := false
	for {
		// A raw call keeps the goroutine's P. With the runtime's
		// Syscall6, sysmon takes a P that stays a tick in a system
		// call back and hands it to another thread; a loopback send
		// also runs its receiver's end, long enough that under load it
		// did so thousands of times a second, each a thread to wake.
		// Raw suits only calls that never block: MSG_DONTWAIT.
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(r.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), salen)
		switch {
		case e == 0:
			return true, nil
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false, nil
		case icmpErrno(e) && !retried:
			// Most likely an ICMP report's pending error, taken by
			// this send (see icmpTook): send again.
			retried = true
			r.wake()
			continue
		}
		return true, fmt.Errorf("coap: write to %v: %w", to, error(e))
	}
}

// close ends the raw path, once no send is under way.
func (r *rawSender) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}
