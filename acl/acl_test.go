package acl

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

var radioNet = []netip.Prefix{netip.MustParsePrefix("fd00:db8:1::/64")}

func addr(s string) Client { return Client{Addr: netip.MustParseAddr(s)} }

func TestListAllows(t *testing.T) {
	l, err := Parse([]string{"loopback", "radio", "192.0.2.0/24", "2001:db8:7::/48", "psk:ops", "cn:console"}, radioNet)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		c    Client
		want bool
	}{
		{"IPv4 loopback", addr("127.0.0.1"), true},
		{"another IPv4 loopback address", addr("127.3.2.1"), true},
		{"IPv6 loopback", addr("::1"), true},
		{"IPv4-mapped loopback, as the IPv4 address it is", addr("::ffff:127.0.0.1"), true},
		{"a node of the radio", addr("fd00:db8:1::2"), true},
		{"next to the radio", addr("fd00:db8:2::2"), false},
		{"in an IPv4 prefix", addr("192.0.2.77"), true},
		{"IPv4-mapped in an IPv4 prefix", addr("::ffff:192.0.2.77"), true},
		{"outside", addr("198.51.100.1"), false},
		{"in an IPv6 prefix", addr("2001:db8:7:ff::1"), true},
		{"a zoned link-local address", Client{Addr: netip.MustParseAddr("fe80::1%eth0")}, false},
		{"a listed PSK identity from anywhere", Client{Addr: netip.MustParseAddr("198.51.100.1"), Identity: "psk:ops"}, true},
		{"a listed certificate name", Client{Identity: "cn:console"}, true},
		{"a PSK identity equal to a listed certificate name", Client{Identity: "psk:console"}, false},
		{"an unlisted identity from outside", Client{Addr: netip.MustParseAddr("198.51.100.1"), Identity: "psk:other"}, false},
		{"an unlisted identity from a listed address", Client{Addr: netip.MustParseAddr("127.0.0.1"), Identity: "psk:other"}, true},
		{"no address and no identity", Client{}, false},
	} {
		if got := l.Allows(c.c); got != c.want {
			t.Errorf("%s (%v): Allows = %v, want %v", c.name, c.c, got, c.want)
		}
	}
	var zero List
	if zero.Allows(addr("127.0.0.1")) {
		t.Error("the zero List allows loopback")
	}
	none, err := Parse(nil, radioNet)
	if err != nil || none.Allows(addr("127.0.0.1")) {
		t.Errorf("an empty list allows loopback (err %v)", err)
	}
	noRadio, err := Parse([]string{"radio"}, nil)
	if err != nil || noRadio.Allows(addr("fd00:db8:1::2")) {
		t.Errorf(`"radio" without radios allows a node (err %v)`, err)
	}
}

func TestParseRefusesWhatCannotMatch(t *testing.T) {
	for _, e := range []string{"", "psk:", "cn:", "127.0.0.1", "10.0.0.0/33", "::ffff:127.0.0.0/104", "Loopback", "any", "x509:foo"} {
		_, err := Parse([]string{"loopback", e}, nil)
		if !errors.Is(err, ErrEntry) || !strings.Contains(err.Error(), "\""+e+"\"") {
			t.Errorf("Parse(%q) = %v, want an ErrEntry naming it", e, err)
		}
	}
}

func TestClientKeyGroupsIPv6ByPrefix(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, c := range []struct {
		c    Client
		want string
	}{
		{addr("192.0.2.7"), "192.0.2.7"},
		{addr("::ffff:192.0.2.7"), "192.0.2.7"},
		{addr("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64"},
		{addr("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64"},
		{addr("fd00:db8:1::5"), "fd00:db8:1::5"},
		{Client{Addr: netip.MustParseAddr("fe80::1%eth0")}, "fe80::/64"},
		{Client{Addr: netip.MustParseAddr("192.0.2.7"), Identity: "psk:ops"}, "psk:ops"},
		{Client{Identity: "psk:" + long}, "sha256:"},
		{Client{Identity: "psk:\xff"}, "sha256:"},
		{Client{}, "unknown"},
	} {
		got := c.c.Key(radioNet)
		if got != c.want && !(c.want == "sha256:" && strings.HasPrefix(got, c.want) && len(got) == 7+64) {
			t.Errorf("Key(%v) = %q, want %q", c.c, got, c.want)
		}
	}
}

func TestOfUnmapsThePeer(t *testing.T) {
	r := &coap.Request{Peer: netip.MustParseAddrPort("[::ffff:10.1.2.3]:5683"), Identity: "cn:x"}
	if c := Of(r); c.Addr != netip.MustParseAddr("10.1.2.3") || c.Identity != "cn:x" {
		t.Fatalf("Of = %+v", c)
	}
}
