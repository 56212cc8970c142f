package radio_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/radiotest"
)

// A learned neighbour entry for an address whose IID derives from a MAC
// address must not outlive the owner speaking from that MAC address:
// otherwise one spoofed datagram black-holes the node until LRU eviction.
func TestConnNodeSpeakingFromDerivedMACReplacesSpoofedNeighbour(t *testing.T) {
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	gw, err := radio.NewConn(a, radio.ConnConfig{Prefix: prefix, PANID: 0xabcd, ExtAddr: gwExt, ShortAddr: gwShort})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	victimIP := addrFor(prefix, nodeExt) // IID derives from nodeExt
	attacker := mac.ShortAddr(0x0666)

	// One spoofed datagram: victim's address, attacker's MAC address.
	sendRaw(t, b, 0xabcd, netip.AddrPortFrom(victimIP, 5683), gw.LocalAddr(), attacker, gwShort, []byte("spoof"))
	read(t, gw)
	// The real node speaks, from the MAC address its IID derives from.
	sendRaw(t, b, 0xabcd, netip.AddrPortFrom(victimIP, 5683), gw.LocalAddr(), nodeExt, gwShort, []byte("real"))
	read(t, gw)

	before := len(a.Sent())
	if err := gw.WriteTo(context.Background(), []byte("reply"), netip.AddrPortFrom(victimIP, 5683)); err != nil {
		t.Fatal(err)
	}
	f, err := mac.Decode(a.Sent()[before])
	if err != nil {
		t.Fatal(err)
	}
	if f.Dst != nodeExt {
		t.Fatalf("reply to %v sent to MAC %v after the node spoke from %v: the spoofed entry stuck", victimIP, f.Dst, nodeExt)
	}
}
