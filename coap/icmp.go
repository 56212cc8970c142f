package coap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// icmpRead handles a read that brought the network's reports of
// undelivered datagrams (ICMPError) instead of datagrams; it reports
// whether err was one. A report ends the exchange whose message it
// quotes (RFC 7252 §4.2), and with it whatever else is under way with
// the same peer: its address and port do not answer. What else is under
// way is taken before the quoted exchange ends, so that an exchange its
// end lets begin is not among them.
func (e *Endpoint) icmpRead(err error) bool {
	var ie *ICMPError
	if !errors.As(err, &ie) {
		return false
	}
	var swept []netip.AddrPort
	for _, r := range ie.Reports {
		e.stats.icmp.Add(1)
		uerr := fmt.Errorf("%w: %v: %w", ErrUnreachable, r.To, r.Err)
		end := e.icmpMatch(r)
		if end == nil {
			e.log.Debug("ICMP report matches nothing sent", "peer", r.To, "err", r.Err)
			continue
		}
		e.stats.unreachable.Add(1)
		var others func(error)
		if !slices.Contains(swept, r.To) {
			swept = append(swept, r.To)
			others = e.icmpPeer(r.To)
		}
		end(uerr)
		if others != nil {
			others(uerr)
		}
	}
	return true
}

// icmpMatch finds the exchange whose message a report quotes and returns
// the function that ends it, or nil. §4.2 asks that an ICMP error be
// checked against the original datagram (ports, message type and code,
// Message ID and token) before it fails anything, so that a report made
// up by someone off the path ends nothing: the quote must be the start of
// a CON still being retransmitted, byte for byte, or name a NON request
// waiting for its response, or a NON notification or response lately
// sent, by Message ID and token. A quote too short to show the token is
// not trusted.
func (e *Endpoint) icmpMatch(r ICMPReport) func(error) {
	q := r.Quote
	if len(q) < 4 || q[0]>>6 != 1 {
		return nil
	}
	tkl := int(q[0] & 0xf)
	if tkl > MaxTokenLen || len(q) < 4+tkl {
		return nil
	}
	typ, code := Type(q[0]>>4&3), Code(q[1])
	k := exKey{r.To, binary.BigEndian.Uint16(q[2:4])}
	tok := q[4 : 4+tkl]
	switch {
	case typ == Confirmable:
		e.mu.Lock()
		p := e.pending[k]
		ok := p != nil && len(q) <= len(p.data) && string(p.data[:len(q)]) == string(q)
		e.mu.Unlock()
		if !ok {
			return nil
		}
		return func(err error) { e.settle(k, nil, err) }
	case typ == NonConfirmable && code.IsRequest():
		if tkl != 8 { // the endpoint's own tokens have 8 bytes
			return nil
		}
		e.mu.Lock()
		c := e.calls[tokKey{r.To, binary.BigEndian.Uint64(tok)}]
		e.mu.Unlock()
		if c == nil || c.established() {
			return nil
		}
		return func(err error) { c.deliver(callResult{err: err}) }
	case typ == NonConfirmable:
		return e.nons.takeToken(k, tok)
	}
	return nil
}

// icmpPeer takes what else is under way with a peer that a vetted report
// named unreachable, and returns the function that ends it: its CONs
// (requests, separate responses, notifications) and the exchanges
// waiting for its responses. They went to the same closed port or lost
// host, and the network limits its reports (Linux sends a host about one
// a second after a short burst), so most would otherwise wait out their
// timeouts. An observation whose first response came waits for nothing,
// and is left to its own rules. The scan is over everything in flight,
// once per peer and read of reports.
func (e *Endpoint) icmpPeer(peer netip.AddrPort) func(error) {
	var keys []exKey
	var calls []*call
	e.mu.Lock()
	for k := range e.pending {
		if k.peer == peer {
			keys = append(keys, k)
		}
	}
	for tk, c := range e.calls {
		if tk.peer == peer && !c.established() {
			calls = append(calls, c)
		}
	}
	e.mu.Unlock()
	return func(err error) {
		for _, k := range keys {
			e.settle(k, nil, err)
		}
		for _, c := range calls {
			c.deliver(callResult{err: err})
		}
	}
}

// established reports whether c is an observation that has had its first
// response: it waits for no answer any more.
func (c *call) established() bool { return c.notify != nil && c.first.Load() }
