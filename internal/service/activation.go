package service

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
)

// Socket is one socket systemd passed (sd_listen_fds(3)): a listening
// stream socket (ListenStream=) or a datagram socket (ListenDatagram=),
// and the address it is bound to. Exactly one of Listener and Packet is
// set.
type Socket struct {
	Name     string // its FileDescriptorName, or "LISTEN_FD_<n>"
	Addr     netip.AddrPort
	Listener net.Listener   // SOCK_STREAM
	Packet   net.PacketConn // SOCK_DGRAM
}

// Stream reports a stream socket.
func (s Socket) Stream() bool { return s.Listener != nil }

// Kind is "stream" or "datagram", for messages.
func (s Socket) Kind() string {
	if s.Stream() {
		return "stream"
	}
	return "datagram"
}

// Close closes the socket.
func (s Socket) Close() error {
	if s.Listener != nil {
		return s.Listener.Close()
	}
	return s.Packet.Close()
}

// Sockets returns the sockets systemd passed to this process (LISTEN_FDS),
// in the order systemd passed them. Without socket activation it returns
// nothing and nil, and the daemon binds its own sockets. The LISTEN_*
// variables are removed from the environment so that plugins do not see
// them. Each descriptor's kind and address come from the kernel
// (SO_TYPE, SO_ACCEPTCONN, getsockname), not from its name: a descriptor
// that is not an IPv4 or IPv6 socket, a stream socket that is not
// listening (Accept=yes), or any other socket type is an error, since the
// unit and the daemon then disagree and guessing would serve the wrong
// protocol.
func Sockets() ([]Socket, error) {
	var out []Socket
	var errs []error
	for _, f := range activation.Files(true) {
		name := f.Name()
		s, err := inherit(f)
		f.Close() // the net.Listener or net.PacketConn holds its own duplicate
		if err != nil {
			errs = append(errs, fmt.Errorf("service: socket %q: %w", name, err))
			continue
		}
		s.Name = name
		out = append(out, s)
	}
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			s.Close()
		}
		return nil, err
	}
	return out, nil
}

// inherit asks the kernel what f is and wraps it accordingly.
func inherit(f *os.File) (Socket, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Socket{}, err
	}
	var typ, listening int
	var sa syscall.Sockaddr
	var serr error
	err = rc.Control(func(fd uintptr) {
		if typ, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE); serr != nil {
			serr = fmt.Errorf("not a socket: %w", serr)
			return
		}
		if sa, serr = syscall.Getsockname(int(fd)); serr != nil {
			return
		}
		if typ == syscall.SOCK_STREAM {
			listening, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return Socket{}, err
	}
	addr, err := sockaddrAddr(sa)
	if err != nil {
		return Socket{}, err
	}
	switch typ {
	case syscall.SOCK_STREAM:
		if listening == 0 {
			return Socket{}, fmt.Errorf("stream socket %v is not listening (Accept=yes is not supported)", addr)
		}
		l, err := net.FileListener(f)
		if err != nil {
			return Socket{}, err
		}
		return Socket{Addr: addr, Listener: l}, nil
	case syscall.SOCK_DGRAM:
		c, err := net.FilePacketConn(f)
		if err != nil {
			return Socket{}, err
		}
		return Socket{Addr: addr, Packet: c}, nil
	}
	return Socket{}, fmt.Errorf("socket type %d on %v is neither stream nor datagram", typ, addr)
}

// sockaddrAddr is the address of an IPv4 or IPv6 socket.
func sockaddrAddr(sa syscall.Sockaddr) (netip.AddrPort, error) {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *syscall.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			// A link-local socket (ListenStream=[fe80::1%eth0]:5683)
			// names its interface as a listen entry does.
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				ip = ip.WithZone(ifi.Name)
			}
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%T is not an IPv4 or IPv6 socket", sa)
}
