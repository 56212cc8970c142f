package bridge

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// poisonURI makes the router of p's running chain rewrite Proxy-Uri pu
// wrongly: the next requests with pu get tamper's options instead of
// pu's own Uri-* options when the route stage splits it (PR1.1). This is
// the fault the guard is there for, a stage that changes a protected
// request beyond what it may, put into the real chain without a hook.
func poisonURI(t *testing.T, p *Proxy, pu string, tamper func(coap.Options) coap.Options) {
	t.Helper()
	c := &p.chain.Load().router.uris
	parsed, err := c.parse([]byte(pu))
	if err != nil {
		t.Fatal(err)
	}
	bad := &parsedURI{u: parsed.u, opts: tamper(append(coap.Options(nil), parsed.opts...))}
	c.mu.Lock()
	c.m[pu] = bad
	c.mu.Unlock()
}

// protectedRequest is an OSCORE request as the proxy sees it (RFC 8613
// §4.2): outer POST, the OSCORE option, a ciphertext payload, Proxy-Uri.
// The proxy holds no key; the bytes are made up.
func protectedRequest(pu string) *coap.Message {
	m := &coap.Message{Code: coap.POST, Payload: []byte{0x61, 0x2f, 0x10, 0x92, 0xf1, 0x77, 0x6f}}
	m.Options = m.Options.Insert(coap.OSCORE, []byte{0x09, 0x14}).Insert(coap.ProxyURI, []byte(pu))
	return m
}

// A protected request that a stage of the real chain (bridge.New, real
// UDP sockets, a real origin) changes beyond PR1.1/PR1.2 is never sent:
// the client gets 5.00 and the origin receives nothing. The same fault on
// an unprotected request does reach the origin, which shows that the
// tampering took effect on the path and that only the guard stopped the
// protected one. Each way a forwarded request takes through the route
// stage is covered: on the listener's reader (Proxy-Uri with an IP
// literal), on a goroutine of its own (a host name to resolve), and as
// an Observe registration through the hub.
func TestGuardStopsATamperedProtectedRequestInTheChain(t *testing.T) {
	defer func(f func(context.Context, string) ([]netip.Addr, error)) { lookupHost = f }(lookupHost)
	lookupHost = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	tamperings := []struct {
		name   string
		tamper func(coap.Options) coap.Options
		// shows reports whether the origin got a request tampered this way.
		shows func(in *coap.Message) bool
	}{
		{"Uri-Path rewritten", func(o coap.Options) coap.Options {
			return o.Remove(coap.URIPath).Insert(coap.URIPath, []byte("valve_42"))
		}, func(in *coap.Message) bool {
			return strings.Join(coap.URIFromOptions(in.Options, "", "", 0).Path, "/") == "valve_42"
		}},
		{"Max-Age added", func(o coap.Options) coap.Options {
			return o.SetUint(coap.MaxAge, 7)
		}, func(in *coap.Message) bool {
			v, ok := in.Options.Uint(coap.MaxAge)
			return ok && v == 7
		}},
		{"second OSCORE option", func(o coap.Options) coap.Options {
			return o.Insert(coap.OSCORE, []byte{0x01})
		}, func(in *coap.Message) bool {
			v, ok := in.Options.Get(coap.OSCORE)
			return ok && bytes.Equal(v, []byte{0x01})
		}},
	}
	paths := []struct {
		name string
		host func(o *recorder) string
		mod  func(m *coap.Message)
	}{
		{"inline", func(o *recorder) string { return o.addr.String() }, func(*coap.Message) {}},
		{"name lookup", func(o *recorder) string { return "origin.test:" + strconv.Itoa(int(o.addr.Port())) }, func(*coap.Message) {}},
		{"observe", func(o *recorder) string { return o.addr.String() }, func(m *coap.Message) {
			m.Options = m.Options.SetUint(coap.Observe, 0)
		}},
	}
	for _, path := range paths {
		for _, tc := range tamperings {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				o := newRecorder(t, content("ok"))
				p := startProxy(t, nil)
				c := client(t)
				pu := "coap://" + path.host(o) + "/alarm_status"

				// Untouched, the protected request passes byte-intact.
				req := protectedRequest(pu)
				path.mod(req)
				resp := do(t, c, p, req)
				if resp.Code != coap.Content {
					t.Fatalf("untampered: got %v, want 2.05", resp.Code)
				}
				in, out := o.last(t)
				mustVerify(t, req, in, out, resp)

				poisonURI(t, p, pu, tc.tamper)
				req = protectedRequest(pu)
				path.mod(req)
				if resp := do(t, c, p, req); resp.Code != coap.InternalServerError {
					t.Fatalf("tampered protected request: got %v, want 5.00", resp.Code)
				}
				if n := o.count(); n != 1 {
					in, _ := o.last(t)
					t.Fatalf("the origin received the tampered protected request: %v", in)
				}

				// The same fault on an unprotected request: forwarded, and
				// the origin sees the tampering.
				plain := protectedRequest(pu)
				plain.Options = plain.Options.Remove(coap.OSCORE)
				path.mod(plain)
				if resp := do(t, c, p, plain); resp.Code != coap.Content {
					t.Fatalf("unprotected request: got %v, want 2.05", resp.Code)
				}
				if n := o.count(); n != 2 {
					t.Fatalf("the origin received %d requests, want the untampered and the unprotected one", n)
				}
				in, _ = o.last(t)
				if !tc.shows(in) || Verify(plain, in) == nil {
					t.Fatalf("the origin got %v: the fault did not take effect", in)
				}
			})
		}
	}
}
