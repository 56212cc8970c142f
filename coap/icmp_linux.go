//go:build linux

package coap

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ICMP reports on Linux: with IP_RECVERR (and IPV6_RECVERR) set, the
// kernel queues each ICMP error for a datagram the socket sent on the
// socket's error queue, with the datagram's destination and as much of it
// as the ICMP message quoted, and sets the socket's pending error, which
// the next receive returns (ECONNREFUSED, EHOSTUNREACH, ...). The readers
// do nothing more until that happens: no system call is added to a read
// that finds datagrams. When a receive returns such an error, the reader
// reads the error queue (recvmsg with MSG_ERRQUEUE). It must: a queued
// report keeps the socket signalled (EPOLLERR) and takes room in its
// receive buffer until it is read.

// icmpQuoteLen is how much of a reported datagram is kept: header, token
// and the first options, which is what RFC 7252 §4.2 asks to check
// (message type, code, Message ID and token).
const icmpQuoteLen = 128

// icmpDrainMax bounds the reports one read of the queue takes. What stays
// queued is not lost: the kernel sets the socket's error again for the
// next report, and the reader comes back for it.
const icmpDrainMax = 16

// enableICMP asks the kernel for ICMP reports on the socket. A dual-stack
// socket needs IP_RECVERR as well as IPV6_RECVERR: the errors of its IPv4
// peers come through the IPv4 stack, which reads only the former.
func enableICMP(c *net.UDPConn, v6 bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
		if v6 {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
		}
	})
}

// errQueue reads a socket's error queue; it belongs to one goroutine, and
// what it returns is valid until its next drain.
type errQueue struct {
	h       unix.Msghdr
	iov     unix.Iovec
	name    unix.RawSockaddrInet6 // large enough for either family
	ctl     [128]byte             // sock_extended_err and the offender's address
	quotes  [icmpDrainMax][icmpQuoteLen]byte
	reports [icmpDrainMax]ICMPReport
	err     ICMPError
}

// drain reads up to icmpDrainMax reports from fd's error queue and
// returns those that say a datagram did not reach its destination.
func (q *errQueue) drain(fd uintptr) []ICMPReport {
	n := 0
	for range icmpDrainMax {
		q.iov.Base = &q.quotes[n][0]
		q.iov.SetLen(icmpQuoteLen)
		q.h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&q.name)), Namelen: unix.SizeofSockaddrInet6, Iov: &q.iov, Control: &q.ctl[0]}
		q.h.SetIovlen(1)
		q.h.SetControllen(len(q.ctl))
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&q.h)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			break // EAGAIN: the queue is empty
		}
		if rep, ok := q.report(q.quotes[n][:min(int(r), icmpQuoteLen)]); ok {
			q.reports[n] = rep
			n++
		}
	}
	return q.reports[:n]
}

// report reads the message drain received; ok is false for what is no
// failure to deliver: a local error, a packet too big (path MTU, which
// §4.2 says not to treat as a failure), a time exceeded, a source quench.
func (q *errQueue) report(quote []byte) (ICMPReport, bool) {
	to, ok := sockaddrAddrPort(&q.name, q.h.Namelen)
	if !ok {
		return ICMPReport{}, false
	}
	for b := q.ctl[:min(int(q.h.Controllen), len(q.ctl))]; len(b) > 0; {
		hdr, data, rest, err := unix.ParseOneSocketControlMessage(b)
		if err != nil {
			break
		}
		b = rest
		if !(hdr.Level == unix.IPPROTO_IP && hdr.Type == unix.IP_RECVERR ||
			hdr.Level == unix.IPPROTO_IPV6 && hdr.Type == unix.IPV6_RECVERR) ||
			len(data) < int(unsafe.Sizeof(unix.SockExtendedErr{})) {
			continue
		}
		// struct sock_extended_err, read field by field: the buffer
		// promises no alignment.
		ee := unix.SockExtendedErr{Errno: binary.NativeEndian.Uint32(data), Origin: data[4], Type: data[5], Code: data[6]}
		if !undelivered(&ee) {
			return ICMPReport{}, false
		}
		return ICMPReport{To: to, Err: syscall.Errno(ee.Errno), Quote: quote}, true
	}
	return ICMPReport{}, false
}

// undelivered reports whether an ICMP error says that the datagram did
// not reach its destination (RFC 7252 §4.2): destination unreachable
// (but for "fragmentation needed", a path MTU matter) or parameter
// problem, in ICMP (RFC 792) or ICMPv6 (RFC 4443).
func undelivered(ee *unix.SockExtendedErr) bool {
	switch ee.Origin {
	case unix.SO_EE_ORIGIN_ICMP:
		return ee.Type == 3 && ee.Code != 4 || ee.Type == 12
	case unix.SO_EE_ORIGIN_ICMP6:
		return ee.Type == 1 || ee.Type == 4
	}
	return false
}

// sockaddrAddrPort reads an address the kernel wrote; an IPv4-mapped one
// (an IPv4 peer of a dual-stack socket) is reported as IPv4.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), netPort(&s4.Port)), true
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), netPort(&sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// icmpErrno reports whether a receive's error is the socket's pending
// error set by an ICMP report: then there is a report to read, and no
// reason to pause.
func icmpErrno(e syscall.Errno) bool {
	switch e {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET,
		unix.ENOPROTOOPT, unix.EPROTO, unix.EMSGSIZE, unix.EACCES, unix.EOPNOTSUPP:
		return true
	}
	return false
}

// icmpAfter is ReadFrom's handling of a failed read: when the socket
// reported an ICMP error, a sender woke the reader (wakeReader), or the
// runtime refused to wait on the socket (it does after an event that was
// an error alone), the error queue is read and its reports returned as
// an *ICMPError. Rare, so it allocates.
func (u *UDP) icmpAfter(err error) error {
	if isClosedErr(err) {
		return err
	}
	woken := errors.Is(err, os.ErrDeadlineExceeded)
	if woken {
		_ = u.c.SetReadDeadline(time.Time{})
	}
	rc, cerr := u.c.SyscallConn()
	if cerr != nil {
		return err
	}
	q := new(errQueue)
	var reps []ICMPReport
	if rc.Control(func(fd uintptr) { reps = q.drain(fd) }) != nil {
		return err
	}
	var errno syscall.Errno
	if len(reps) == 0 && !woken && !(errors.As(err, &errno) && icmpErrno(errno)) {
		return err
	}
	q.err.Reports = reps
	return &q.err
}

// Sends and pending errors. The socket's pending error that an ICMP
// report sets is returned by whatever comes first: the reader's receive,
// or a send, to any peer, which the kernel then fails without sending
// anything. So a send that fails so is made again, once (a second
// failure is its own: no route, say), and since the reader, whom the
// error woke, may find nothing and wait again while the report stays on
// the error queue, the sender wakes it with a read deadline in the past
// (wakeReader). sendmmsg is worse: it stops at the message that fails
// and, having sent those before it, reports no error at all; so a batch
// sent short wakes the reader too.

// icmpTook reports whether a send's error may have been an ICMP report's
// pending error; if so the reader has been woken, and the caller sends
// again, once.
func (u *UDP) icmpTook(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) || !icmpErrno(errno) {
		return false
	}
	wakeReader(u.c)
	return true
}

// wakeReader has the socket's reader read the error queue: a read
// deadline in the past ends its wait (or its next one), and the reader,
// seeing the deadline, clears it and reads the queue.
func wakeReader(c *net.UDPConn) { _ = c.SetReadDeadline(time.Now()) }

// sentShort is WriteBatch's handling of a batch the kernel sent only in
// part.
func (u *UDP) sentShort() { wakeReader(u.c) }
