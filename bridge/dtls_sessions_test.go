package bridge

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/pion/dtls/v3"
)

// A datagram that only looks like a DTLS handshake record, from a peer that
// holds no key and never completes a handshake, must not cost a session slot
// for long: otherwise maxDTLSSessions such datagrams (one per source port,
// from anywhere: the clients filter only sees decrypted datagrams) lock
// every real client out.
func TestDTLSUnfinishedHandshakesDoNotLockOutClients(t *testing.T) {
	keys := map[string][]byte{"client": []byte("secretPSK")}
	d, err := ListenDTLS(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), DTLSKeys{PSK: keys}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	to := net.UDPAddrFromAddrPort(d.LocalAddr())

	// A DTLS 1.2 record header, content type handshake, then garbage.
	junk := []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4}
	var socks []*net.UDPConn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	sendJunk := func() {
		s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
		if _, err := s.WriteToUDP(junk, to); err != nil {
			t.Fatal(err)
		}
	}
	// Junk until it holds every handshake slot (the listener's accept
	// backlog may drop some on the way), then the rest of the source
	// ports, which find none free.
	testutil.Eventually(t, "junk handshakes in every slot", func() bool {
		if len(socks) < 2*maxDTLSSessions {
			sendJunk()
		}
		return len(d.hs) == maxDTLSHandshakes
	})
	for len(socks) < 2*maxDTLSSessions {
		sendJunk()
	}
	// The junk's handshakes end at handshakeTimeout and give their slots
	// back: a slot held for ever would fail here.
	testutil.Eventually(t, "the junk's handshake slots given back", func() bool { return len(d.hs) == 0 })
	d.mu.Lock()
	n := len(d.conns)
	d.mu.Unlock()
	t.Logf("sessions held by peers that never finished a handshake, once their handshakes ended: %d", n)

	// A real client with the right key.
	cfg := &dtls.Config{
		PSK:             func([]byte) ([]byte, error) { return keys["client"], nil },
		PSKIdentityHint: []byte("client"),
		CipherSuites:    []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8},
	}
	c, err := dtls.Dial("udp", to, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatalf("a client with a valid key cannot connect after junk datagrams from %d source ports: %v (sessions held: %d of %d)", 2*maxDTLSSessions, err, n, maxDTLSSessions)
	}
}
