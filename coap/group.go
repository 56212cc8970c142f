package coap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Group requests (RFC 7252 §8.1, draft-ietf-core-groupcomm-bis §3.1): one
// NON to a multicast address, and any number of responses, each from a
// member's own unicast address and all with the request's token. They are
// matched by token alone, since no response comes from the address the
// request went to.

// maxGroupRequests bounds the group requests in progress or lingering on
// one endpoint: each may draw many responses, and whoever starts them
// (the proxy's per-client limits) should never come near it.
const maxGroupRequests = 1024

// ErrGroupBusy is Group's error when maxGroupRequests are in progress.
var ErrGroupBusy = errors.New("coap: too many group requests in progress")

// groupCall is one group request's response handling.
type groupCall struct {
	deliver func(from netip.AddrPort, resp *Message)
	late    func(from netip.AddrPort)
	stopped atomic.Bool
}

// groupCalls are an endpoint's group requests by token.
type groupCalls struct {
	mu sync.Mutex
	m  map[uint64]*groupCall // guarded by mu
}

// GroupRequest is a group request sent by Endpoint.Group.
type GroupRequest struct {
	e    *Endpoint
	to   netip.AddrPort
	tok  uint64
	c    *groupCall
	once sync.Once
}

// Group sends req once, as a NON with a fresh 8-byte token, to the
// multicast address to (RFC 7252 §8.1: group requests are never
// confirmable). Every response with that token, from whichever peer, goes
// to deliver, on the endpoint's reader goroutine: deliver must not block.
// After Stop, responses with the token are late: late hears of each, and
// they are dropped, without an RST but for notifications (RFC 7641 §3.6:
// the member then forgets the observation), for an EXCHANGE_LIFETIME; the token is
// then forgotten (groupcomm-bis §3.1.5 keeps it from reuse for that long;
// tokens here are random).
func (e *Endpoint) Group(to netip.AddrPort, req *Message, deliver func(from netip.AddrPort, resp *Message), late func(from netip.AddrPort)) (*GroupRequest, error) {
	if !to.Addr().IsMulticast() {
		return nil, fmt.Errorf("coap: group request to %v: not a multicast address", to)
	}
	g := &GroupRequest{e: e, to: to, c: &groupCall{deliver: deliver, late: late}}
	var tok [8]byte
	out := *req
	out.Type = NonConfirmable
	out.MID = e.allocMID(to)
	gs := &e.groups
	gs.mu.Lock()
	if gs.m == nil {
		gs.m = make(map[uint64]*groupCall)
	}
	if len(gs.m) >= maxGroupRequests {
		gs.mu.Unlock()
		return nil, ErrGroupBusy
	}
	for {
		g.tok = rand.Uint64()
		if _, taken := gs.m[g.tok]; !taken {
			break
		}
	}
	gs.m[g.tok] = g.c
	gs.mu.Unlock()
	binary.BigEndian.PutUint64(tok[:], g.tok)
	out.Token = tok[:]
	data, err := out.Marshal()
	if err != nil {
		g.forget()
		return nil, fmt.Errorf("coap: encode group request: %w", err)
	}
	if e.ctx.Err() != nil {
		g.forget()
		return nil, ErrClosed
	}
	e.write(to, data)
	return g, nil
}

// Resend sends req to the group again, as a NON with this request's
// token: the deregistration of a group observation, which the members
// match by token (RFC 7641 §3.6; draft-ietf-core-groupcomm-bis §3.7).
func (g *GroupRequest) Resend(req *Message) error {
	out := *req
	out.Type = NonConfirmable
	out.MID = g.e.allocMID(g.to)
	out.Token = g.Token()
	data, err := out.Marshal()
	if err != nil {
		return fmt.Errorf("coap: encode group request: %w", err)
	}
	if g.e.ctx.Err() != nil {
		return ErrClosed
	}
	g.e.write(g.to, data)
	return nil
}

// Token is the group request's token.
func (g *GroupRequest) Token() []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], g.tok)
	return b[:]
}

// Stop ends the delivery of responses: from now on they are late. It is
// idempotent.
func (g *GroupRequest) Stop() {
	g.once.Do(func() {
		g.c.stopped.Store(true)
		time.AfterFunc(g.e.lifetime, g.forget)
	})
}

func (g *GroupRequest) forget() {
	gs := &g.e.groups
	gs.mu.Lock()
	if gs.m[g.tok] == g.c {
		delete(gs.m, g.tok)
	}
	gs.mu.Unlock()
}

// groupResponse takes a response that matched no unicast exchange if its
// token is a group request's; it reports whether it did. k is the
// response's exchange, for the ACK of a CON response (§5.2.3 allows one).
func (e *Endpoint) groupResponse(m *Message, peer netip.AddrPort, k exKey) bool {
	if len(m.Token) != 8 || m.Type == Acknowledgement {
		return false
	}
	gs := &e.groups
	gs.mu.Lock()
	c := gs.m[binary.BigEndian.Uint64(m.Token)]
	gs.mu.Unlock()
	if c == nil {
		return false
	}
	if c.stopped.Load() && m.Options.Has(Observe) {
		e.sendRST(peer, m.MID)
		if m.Type == Confirmable {
			e.remember(k, rstBytes(m.MID))
		}
		if c.late != nil {
			c.late(peer)
		}
		return true
	}
	if m.Type == Confirmable {
		e.remember(k, e.sendEmptyACK(peer, m.MID))
	}
	if c.stopped.Load() {
		if c.late != nil {
			c.late(peer)
		}
		return true
	}
	c.deliver(peer, m.Clone())
	return true
}
