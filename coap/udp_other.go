//go:build !linux

package coap

import (
	"errors"
	"net"
	"net/netip"
)

// NewBatch is recvmmsg(2) on Linux; elsewhere the endpoint reads one
// datagram at a time.
func (u *UDP) NewBatch(int) (Batch, error) {
	return nil, errors.New("coap: batch reads need Linux")
}

// enableICMP: ICMP reports are read on Linux only; elsewhere an exchange
// with an unreachable peer ends at its timeout.
func enableICMP(*net.UDPConn, bool) {}

func (u *UDP) icmpAfter(err error) error { return err }
func (u *UDP) icmpTook(error) bool       { return false }
func (u *UDP) sentShort()                {}

// rawSender is the runtime's path everywhere but Linux.
type rawSender struct{}

func (rawSender) init(*net.UDPConn)                           {}
func (rawSender) sendto([]byte, netip.AddrPort) (bool, error) { return false, nil }
func (rawSender) close()                                      {}
