package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// UDP is a Transport on a UDP socket.
type UDP struct {
	c     *net.UDPConn
	v6    bool // an IPv6 socket: IPv4 peers are written as IPv4-mapped
	raw   rawSender
	batch interface {
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
}

var (
	_ Transport   = (*UDP)(nil)
	_ BatchWriter = (*UDP)(nil)
)

// ListenUDP binds a UDP socket, e.g. "127.0.0.1:5683" or "[::]:0".
func ListenUDP(ctx context.Context, addr string) (*UDP, error) {
	return ListenUDPNetwork(ctx, "udp", addr)
}

// ListenUDPNetwork is ListenUDP for a network of package net: "udp4" or
// "udp6" for a socket of one family only ("udp" makes a wildcard socket
// dual-stack, whose IPv4 traffic takes the longer IPv6 path in the
// kernel).
func ListenUDPNetwork(ctx context.Context, network, addr string) (*UDP, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("coap: listen %s %s: %w", network, addr, err)
	}
	return NewUDP(pc.(*net.UDPConn)), nil
}

// NewUDP wraps an open socket (e.g. one passed by systemd).
func NewUDP(c *net.UDPConn) *UDP {
	// Bigger socket buffers ride out bursts of a proxy's fan-in; the
	// kernel caps them at net.core.rmem_max.
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	la, _ := c.LocalAddr().(*net.UDPAddr)
	u := &UDP{c: c, v6: la != nil && la.IP.To4() == nil}
	u.raw.init(c)
	// The network's reports of undelivered datagrams (ICMP) fail the
	// exchanges they concern at once (RFC 7252 §4.2).
	enableICMP(c, u.v6)
	if u.v6 {
		u.batch = ipv6.NewPacketConn(c)
	} else {
		u.batch = ipv4.NewPacketConn(c)
	}
	return u
}

// batchVecs are WriteBatch's vectors, kept for the next batch.
type batchVecs struct {
	ms    []ipv4.Message
	bufs  [][]byte
	addrs []net.UDPAddr
	ips   [][16]byte
}

var batchPool = sync.Pool{New: func() any { return new(batchVecs) }}

// WriteBatch sends ds with as few system calls as the platform allows
// (BatchWriter; sendmmsg on Linux, one at a time elsewhere).
func (u *UDP) WriteBatch(_ context.Context, ds []Datagram) (int, error) {
	v := batchPool.Get().(*batchVecs)
	defer batchPool.Put(v)
	ms, bufs, addrs, ips := v.ms[:0], v.bufs[:0], v.addrs[:0], v.ips[:0]
	for _, d := range ds {
		to := d.To
		if u.v6 && to.Addr().Is4() {
			to = netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port())
		}
		bufs = append(bufs, d.B)
		ips = append(ips, to.Addr().As16())
		ip := net.IP(ips[len(ips)-1][:])
		if to.Addr().Is4() {
			ip = ip[12:]
		}
		addrs = append(addrs, net.UDPAddr{IP: ip, Port: int(to.Port())})
	}
	for i := range bufs {
		ms = append(ms, ipv4.Message{Buffers: bufs[i : i+1], Addr: &addrs[i]})
	}
	defer func() {
		clear(ms)
		clear(bufs)
		v.ms, v.bufs, v.addrs, v.ips = ms[:0], bufs[:0], addrs[:0], ips[:0]
	}()
	sent, retried := 0, false
	for sent < len(ms) {
		n, err := u.batch.WriteBatch(ms[sent:], 0)
		n = max(n, 0) // a failed sendmmsg reports -1
		sent += n
		switch {
		case err != nil && n == 0 && !retried && u.icmpTook(err):
			retried = true // an ICMP report's pending error: again
		case err != nil:
			return sent, err
		case n == 0:
			return sent, errors.New("coap: sendmmsg sent nothing")
		case sent < len(ms):
			u.sentShort()
		}
	}
	return sent, nil
}

// ReadFrom reads one datagram. Peers of an IPv6 socket that are IPv4 are
// reported as IPv4 addresses, not IPv4-mapped ones. Reports of datagrams
// that did not arrive come as an *ICMPError (on Linux).
func (u *UDP) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, ap, err := u.c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, netip.AddrPort{}, u.icmpAfter(err)
	}
	return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// WriteTo sends one datagram; UDP does not block, so ctx is not consulted.
func (u *UDP) WriteTo(_ context.Context, b []byte, to netip.AddrPort) error {
	if u.v6 && to.Addr().Is4() {
		to = netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port())
	}
	if sent, err := u.raw.sendto(b, to); sent {
		return err
	}
	// The socket's buffer is full, the peer has a zone, or the platform
	// has no raw path: the runtime's path waits until the datagram fits
	// and turns a zone into a scope ID.
	_, err := u.c.WriteToUDPAddrPort(b, to)
	if err != nil && u.icmpTook(err) {
		_, err = u.c.WriteToUDPAddrPort(b, to)
	}
	return err
}

// LocalAddr is the bound address.
func (u *UDP) LocalAddr() netip.AddrPort {
	return u.c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close closes the socket, ending a blocked ReadFrom.
func (u *UDP) Close() error {
	u.raw.close()
	return u.c.Close()
}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }
