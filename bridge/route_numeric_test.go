package bridge

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestParseIPv4NumberTakesInetAtonForms(t *testing.T) {
	for _, c := range []struct {
		host string
		want string // "" when not a number
	}{
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0X7F.0.0.1", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"127.000.000.001", "127.0.0.1"},
		{"10.0x10000", "10.1.0.0"},
		{"1.16777215", "1.255.255.255"},
		{"0", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"1.16777216", ""},
		{"1.2.65536", ""},
		{"256.1", ""},
		{"127.0.0.256", ""},
		{"1.2.3.4.5", ""},
		{"127.0.0.1.", ""},
		{".127.1", ""},
		{"127..1", ""},
		{"08.1", ""},
		{"0x", ""},
		{"0xg.1", ""},
		{"localhost", ""},
		{"cafe", ""},
		{"127.1 ", ""},
		{"", ""},
		{"99999999999999999999999", ""},
	} {
		a, ok := parseIPv4Number(c.host)
		got := ""
		if ok {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("parseIPv4Number(%q) = %q, want %q", c.host, got, c.want)
		}
	}
}

// Short forms of an allowed IPv4 address (what getaddrinfo reads as one)
// are served, by libcoap's client and the Go one, without a name lookup;
// IPv4-mapped IPv6 literals are the IPv4 address they map. Both are
// judged by the allow list as the address they stand for: a short form
// or mapped literal of an address outside it gets 5.05, and an IPv6
// prefix does not admit a mapped IPv4 address.
func TestNumericHostFormsAreJudgedAsTheirAddress(t *testing.T) {
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return nil, fmt.Errorf("no resolver in this test (asked for %q)", host)
	}
	o := newRecorder(t, content("22.5"))
	port := o.addr.Port()
	p := startProxy(t, func(c *Config) { c.Proxy.Allow = []string{"127.0.0.1/32"} })
	c := client(t)
	for _, h := range []string{"127.1", "127.0.1", "0x7f.1", "2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"} {
		uri := fmt.Sprintf("coap://%s:%d/x", h, port)
		before := o.count()
		resp := do(t, c, p, &coap.Message{Code: coap.PUT, Options: proxyURI(uri), Payload: []byte("v")})
		if resp.Code != coap.Content || o.count() != before+1 {
			t.Errorf("%s: %v %q, origin saw %d requests", uri, resp.Code, resp.Payload, o.count()-before)
		}
	}
	out := libcoapClient(t, "coap-client-notls", "-m", "get", "-P", "coap://"+p.Addrs()[0].String(), fmt.Sprintf("coap://127.1:%d/x", port))
	if !strings.Contains(out, "22.5") {
		t.Errorf("libcoap through the proxy to coap://127.1: %q", out)
	}
	for _, h := range []string{"127.2", "0x7f.2", "2130706434", "[::ffff:127.0.0.2]"} {
		uri := fmt.Sprintf("coap://%s:%d/x", h, port)
		resp := do(t, c, p, &coap.Message{Code: coap.GET, Options: proxyURI(uri)})
		if resp.Code != coap.ProxyingNotSupported || !strings.Contains(string(resp.Payload), "127.0.0.2") {
			t.Errorf("%s, outside allow: %v %q, want 5.05 naming 127.0.0.2", uri, resp.Code, resp.Payload)
		}
	}

	v6 := startProxy(t, func(c *Config) { c.Proxy.Allow = []string{"::/0"} })
	resp := do(t, c, v6, &coap.Message{Code: coap.GET, Options: proxyURI(fmt.Sprintf("coap://[::ffff:127.0.0.1]:%d/x", port))})
	if resp.Code != coap.ProxyingNotSupported {
		t.Errorf("an IPv4-mapped target with allow = [\"::/0\"]: %v %q, want 5.05", resp.Code, resp.Payload)
	}
}
