package service

import (
	"fmt"
	"net"
	"sort"

	"github.com/coreos/go-systemd/v22/activation"
)

// The FileDescriptorName values gatewayd.socket gives its sockets.
const (
	SocketCoAP  = "coap"  // plain CoAP, UDP 5683
	SocketCoAPS = "coaps" // CoAP over DTLS, UDP 5684
)

// PacketConns returns the UDP sockets systemd passed to this process
// (LISTEN_FDS), keyed by their FileDescriptorName; an unnamed socket is
// keyed "LISTEN_FD_<n>". Without socket activation it returns an empty map
// and nil, and the daemon binds its own sockets. The LISTEN_* variables
// are removed from the environment so that plugins do not see them. A
// passed descriptor that is not a UDP socket is an error: the unit and the
// daemon disagree, and guessing would serve the wrong protocol.
func PacketConns() (map[string][]net.PacketConn, error) {
	files := activation.FilesWithNames()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	out := map[string][]net.PacketConn{}
	var err error
	for _, name := range names {
		for _, f := range files[name] {
			if err != nil {
				f.Close()
				continue
			}
			var c net.PacketConn
			c, err = net.FilePacketConn(f)
			f.Close() // FilePacketConn holds its own duplicate
			if err != nil {
				err = fmt.Errorf("service: socket %q: %w", name, err)
				continue
			}
			if _, ok := c.(*net.UDPConn); !ok {
				c.Close()
				err = fmt.Errorf("service: socket %q: %T is not a UDP socket", name, c)
				continue
			}
			out[name] = append(out[name], c)
		}
	}
	if err != nil {
		for _, cs := range out {
			for _, c := range cs {
				c.Close()
			}
		}
		return nil, err
	}
	return out, nil
}
