// Package acl says who may do what on the gateway's own services: a List
// of address prefixes and authenticated DTLS identities, parsed and
// checked once from the configuration, and the Client of a request to
// match against it. The pub-sub broker decides with it who may create,
// reconfigure and delete topics, publish and subscribe; the resource
// directory (package rd, RFC 9176) who may register and look up.
//
// A List entry is one of:
//
//   - a CIDR prefix, "192.0.2.0/24" or "2001:db8::/32": clients whose
//     address (an IPv4-mapped IPv6 address as the IPv4 address it is) is
//     in it;
//   - "loopback": 127.0.0.0/8 and ::1/128;
//   - "radio": the prefix of every configured radio network;
//   - "psk:<identity>": DTLS clients that authenticated with that
//     pre-shared-key identity;
//   - "cn:<name>": DTLS clients whose certificate, verified against the
//     listener's client CAs, has that subject common name.
//
// Address entries trust the datagram's source address, which a client
// off the path can forge for a request it needs no answer to; identities
// are proven by the DTLS handshake.
package acl

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/opaque-edge/gatewayd/coap"
)

// Keywords that stand for prefixes.
const (
	Loopback = "loopback"
	Radio    = "radio"
)

// Identity kinds, as coap.Request.Identity writes them.
const (
	PSK = "psk:"
	CN  = "cn:"
)

// ErrEntry is wrapped by every error Parse returns.
var ErrEntry = errors.New("acl: bad entry")

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Client is who sent a request, as a List sees it.
type Client struct {
	// Addr is the client's address, never IPv4-mapped; the zero Addr
	// matches no prefix.
	Addr netip.Addr
	// Identity is coap.Request.Identity: "psk:<identity>",
	// "cn:<name>", or "" for a client that proved none.
	Identity string
}

// Of is the client that sent r.
func Of(r *coap.Request) Client {
	return Client{Addr: r.Peer.Addr().Unmap(), Identity: r.Identity}
}

// String names the client in logs and diagnostics.
func (c Client) String() string {
	switch {
	case c.Identity != "" && c.Addr.IsValid():
		return c.Identity + "@" + c.Addr.String()
	case c.Identity != "":
		return c.Identity
	case c.Addr.IsValid():
		return c.Addr.String()
	}
	return "unknown client"
}

// maxKey bounds a quota key, which is stored with what the client made.
const maxKey = 255

// Key names the client for per-client quotas. A client with an identity
// is that identity, wherever it connects from. Otherwise it is its
// address: an IPv4 address alone, an IPv6 address by its /64, since one
// host or site is usually given a whole /64 and picks addresses in it at
// will; except an address in one of perAddress (the gateway's radio
// networks, one /64 holding many nodes that each have their own), which
// counts alone. Keys are valid UTF-8 of at most 255 bytes; a longer or
// invalid identity is named by its SHA-256. A client with neither address
// nor identity is "unknown".
func (c Client) Key(perAddress []netip.Prefix) string {
	if c.Identity != "" {
		if len(c.Identity) <= maxKey && utf8.ValidString(c.Identity) {
			return c.Identity
		}
		sum := sha256.Sum256([]byte(c.Identity))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	a := c.Addr.Unmap()
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is4() || containsAddr(perAddress, a):
		return a.WithZone("").String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// List is who may do something. The zero List allows no one.
type List struct {
	prefixes []netip.Prefix
	ids      map[string]bool // "psk:..." and "cn:..." entries
}

// Parse reads entries (see the package comment); radio is what "radio"
// stands for. An entry that is none of the forms is an error naming it.
func Parse(entries []string, radio []netip.Prefix) (List, error) {
	var l List
	for _, e := range entries {
		switch {
		case e == Loopback:
			l.prefixes = append(l.prefixes, loopback...)
		case e == Radio:
			for _, p := range radio {
				l.prefixes = append(l.prefixes, p.Masked())
			}
		case strings.HasPrefix(e, PSK) || strings.HasPrefix(e, CN):
			if e == PSK || e == CN {
				return List{}, fmt.Errorf("%w: %q names no identity", ErrEntry, e)
			}
			if l.ids == nil {
				l.ids = map[string]bool{}
			}
			l.ids[e] = true
		default:
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return List{}, fmt.Errorf("%w: %q is not a CIDR prefix, %q, %q, \"psk:<identity>\" or \"cn:<name>\"", ErrEntry, e, Loopback, Radio)
			}
			if p.Addr().Is4In6() {
				// Clients are matched as the IPv4 address they are, so
				// this prefix could never match.
				return List{}, fmt.Errorf("%w: %q is IPv4-mapped; write the IPv4 prefix", ErrEntry, e)
			}
			l.prefixes = append(l.prefixes, p.Masked())
		}
	}
	return l, nil
}

// Allows reports whether c is on the list: its address in one of the
// prefixes, or its identity listed.
func (l List) Allows(c Client) bool {
	if c.Identity != "" && l.ids[c.Identity] {
		return true
	}
	return containsAddr(l.prefixes, c.Addr)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
