package bridge

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Amplification mitigation (RFC 7252 §11.3, RFC 9175 §2.4 item 3 and
// §2.6). A UDP request's source address may be forged: whoever forges it
// has the proxy send its answer to the address's owner. Until an address
// is verified, the answers to it are at most ampFactor times the size of
// the request they answer (UDP payloads). A larger answer to a safe
// request becomes a 4.01 (Unauthorized) with an Echo option, which a
// client that does receive at the address repeats its request with; a
// local resource's representation (/.well-known/core, the broker) becomes
// a first Block2 block that fits instead (local.go), so that clients
// without Echo still get it, block by block.
//
// Verified are: sources in [proxy] verified (loopback by default: the
// kernel drops datagrams from outside that claim a loopback source, so
// they cannot be forged from the network), DTLS sessions (the handshake's
// cookie exchange proved the address), the plugins' front ends (their
// clients are on TCP, whose handshake did), an address that sent back an
// Echo value this proxy made for it, within echo_lifetime, and an address
// that acknowledged a CON this proxy sent it (a separate response, a
// notification, a request to a node). The last two stay verified for
// verified_for, in a table of at most max_verified addresses. A request
// merely arriving from an address verifies nothing.

// ampFactor bounds bytes sent per byte received to an unverified address:
// the figure RFC 9175 §2.4 takes from RFC 9000 §8.
const ampFactor = 3

// echoDeadline is how long an unverified client's CON request for a
// forwarded resource may wait for its answer before it gets the Echo
// challenge instead: half the endpoint's AckDelay (1 s), so that the
// challenge is still piggybacked in the ACK (RFC 9175 §2.4 item 3: never
// a separate response). The answer that comes later is not sent, but the
// cache keeps it when it may, for the client's repeated request (RFC 9175
// §2.4: a proxy may forward a safe request to have it ready).
const echoDeadline = 500 * time.Millisecond

// separateCopies is how many times a separate response may be sent: once
// and MAX_RETRANSMIT times more, which is 4 by default (RFC 7252 §4.8)
// and at most 10 for a radio (radio.Config max_retransmit). With the
// empty ACK before it, this is what one counts against the limit.
const separateCopies = 1 + 10

// echoLen is an Echo value's length: a 32-bit timestamp and a 64-bit
// truncated HMAC-SHA-256 (RFC 9175 Appendix A, item 2).
const (
	echoTimeLen = 4
	echoMACLen  = 8
	echoLen     = echoTimeLen + echoMACLen
)

// AmpStats are the amplification mitigation's counters.
type AmpStats struct {
	Verified          int    `json:"verified"`           // addresses verified now by an Echo value or an ACK
	Challenges        uint64 `json:"challenges"`         // 4.01 with Echo sent
	ObserveChallenges uint64 `json:"observe_challenges"` // of those, to Observe registrations
	EchoVerified      uint64 `json:"echo_verified"`      // addresses verified by an Echo value they sent back
	EchoExpired       uint64 `json:"echo_expired"`       // Echo values of this proxy's that came back after echo_lifetime
	AckVerified       uint64 `json:"ack_verified"`       // addresses verified by acknowledging a CON
	Blocks            uint64 `json:"blocks"`             // local representations cut to a block within the limit
	Trimmed           uint64 `json:"trimmed"`            // answers sent without payload (or options) to stay within the limit
	Dropped           uint64 `json:"dropped"`            // answers not sent: a separate response over the limit, or a late challenge
}

// verifier makes and checks Echo values and remembers verified
// addresses. It lives as long as the proxy: a reload keeps its key and
// table.
type verifier struct {
	key [32]byte // random per process: values die with it (RFC 9175 App. A)
	now func() time.Time

	challenges, observeChallenges, echoVerified, echoExpired, ackVerified, blocks, trimmed, dropped atomic.Uint64

	mu       sync.Mutex
	lifetime time.Duration                // guarded by mu: echo_lifetime
	window   time.Duration                // guarded by mu: verified_for
	max      int                          // guarded by mu: max_verified
	addrs    map[netip.Addr]*list.Element // guarded by mu
	lru      list.List                    // guarded by mu: *verified, most recent first
}

// verified is an address verified until a time.
type verified struct {
	addr  netip.Addr
	until time.Time
}

func newVerifier(cfg ProxyConfig) *verifier {
	v := &verifier{now: time.Now, addrs: map[netip.Addr]*list.Element{}}
	rand.Read(v.key[:]) // never fails (crypto/rand)
	v.configure(cfg)
	return v
}

// configure applies [proxy] echo_lifetime, verified_for and max_verified
// (at start and on reload); a smaller table forgets the oldest.
func (v *verifier) configure(cfg ProxyConfig) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lifetime, v.window, v.max = cfg.EchoLifetime.Duration, cfg.VerifiedFor.Duration, cfg.MaxVerified
	for v.lru.Len() > v.max {
		v.dropLocked(v.lru.Back())
	}
}

func (v *verifier) dropLocked(e *list.Element) {
	delete(v.addrs, e.Value.(*verified).addr)
	v.lru.Remove(e)
}

// addrKey is how an address is remembered: IPv4-mapped IPv6 as IPv4, no
// zone.
func addrKey(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// verify records that a proved it receives at its address; it reports
// whether a was not verified before.
func (v *verifier) verify(a netip.Addr) bool {
	a = addrKey(a)
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.addrs[a]; ok {
		x := e.Value.(*verified)
		fresh := now.After(x.until)
		x.until = now.Add(v.window)
		v.lru.MoveToFront(e)
		return fresh
	}
	if v.max <= 0 {
		return true
	}
	for v.lru.Len() >= v.max {
		v.dropLocked(v.lru.Back())
	}
	v.addrs[a] = v.lru.PushFront(&verified{addr: a, until: now.Add(v.window)})
	return true
}

// onAck is the endpoints' OnAck: the peer acknowledged a CON sent to it.
func (v *verifier) onAck(peer netip.AddrPort) {
	if v.verify(peer.Addr()) {
		v.ackVerified.Add(1)
	}
}

// has reports whether a is verified now.
func (v *verifier) has(a netip.Addr) bool {
	a = addrKey(a)
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.addrs[a]
	if !ok {
		return false
	}
	if now.After(e.Value.(*verified).until) {
		v.dropLocked(e)
		return false
	}
	return true
}

// count is the number of addresses in the table.
func (v *verifier) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lru.Len()
}

// mac is the Echo value's MAC over its timestamp and the address it was
// made for (RFC 9175 Appendix A, item 2: with the claimed network address
// when it shows reachability).
func (v *verifier) mac(ts []byte, a netip.Addr) []byte {
	h := hmac.New(sha256.New, v.key[:])
	h.Write(ts)
	b := addrKey(a).As16()
	h.Write(b[:])
	return h.Sum(nil)[:echoMACLen]
}

// echo makes an Echo value for a, valid for echo_lifetime from now.
func (v *verifier) echo(a netip.Addr) []byte {
	out := make([]byte, echoTimeLen, echoLen)
	binary.BigEndian.PutUint32(out, uint32(v.now().Unix()))
	return append(out, v.mac(out, a)...)
}

// check reads an Echo value from a request from a: ours reports that this
// proxy made it for a (RFC 9175 §2.3: a proxy removes its own values
// before forwarding), fresh that it is within echo_lifetime.
func (v *verifier) check(val []byte, a netip.Addr) (ours, fresh bool) {
	if len(val) != echoLen || !hmac.Equal(val[echoTimeLen:], v.mac(val[:echoTimeLen], a)) {
		return false, false
	}
	made := time.Unix(int64(binary.BigEndian.Uint32(val)), 0)
	now := v.now()
	v.mu.Lock()
	lifetime := v.lifetime
	v.mu.Unlock()
	// A second of slack for the timestamp's resolution.
	return true, !made.After(now.Add(time.Second)) && now.Sub(made) < lifetime
}

// Stats returns the counters.
func (v *verifier) Stats() AmpStats {
	return AmpStats{
		Verified: v.count(), Challenges: v.challenges.Load(), ObserveChallenges: v.observeChallenges.Load(),
		EchoVerified: v.echoVerified.Load(), EchoExpired: v.echoExpired.Load(), AckVerified: v.ackVerified.Load(),
		Blocks: v.blocks.Load(), Trimmed: v.trimmed.Load(), Dropped: v.dropped.Load(),
	}
}

// newAmp is the chain's amplification stage, the first: every answer of
// the chain to an unverified address goes through it, the rate limit's
// 4.29 included.
// trusted are [proxy] verified; plugin reports the plugins' front ends;
// forwards tells the requests that go on to an origin.
func newAmp(v *verifier, trusted []netip.Prefix, plugin func(netip.Addr) bool, forwards func(*coap.Message) bool) stage {
	return func(next coap.Handler) coap.Handler {
		return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			a := r.Peer.Addr()
			size := 0 // what the client sent, an Echo value included
			if val, ok := r.Msg.Options.Get(coap.Echo); ok {
				if ours, fresh := v.check(val, a); ours {
					size = r.Msg.Size()
					switch {
					case fresh && v.verify(a):
						v.echoVerified.Add(1)
					case !fresh:
						v.echoExpired.Add(1)
					}
					r = withoutEcho(r)
				}
			}
			// A stream client's address was verified by its connection's
			// handshake (RFC 8323: TCP), as a DTLS client's was.
			if r.Secure || r.Conn != 0 || contains(trusted, a) || plugin(a) || v.has(a) {
				return next.ServeCoAP(ctx, w, r)
			}
			m := r.Msg
			if size == 0 {
				size = m.Size()
			}
			lw := &limitWriter{w: w, v: v, peer: a, tokLen: len(m.Token), limit: ampFactor * size, safe: m.Code.IsSafe()}
			// Later stages find lw in front of the writer (coap.WrapperOf):
			// the local stage cuts its representations to fit.
			ww := coap.WrapWriter(w, lw)
			if obs, ok := m.Options.Uint(coap.Observe); ok && obs == 0 && m.Code.IsSafe() {
				// Not an observer until verified: notifications would go
				// on to the address for as long as the resource changes.
				v.observeChallenges.Add(1)
				return lw.challenge()
			}
			fwd := forwards(m)
			if fwd && !lw.safe {
				// A 4.01 says the request was not processed, so it must
				// come before: an unsafe request is not sent on until
				// its client is verified (RFC 9175 §2.4 items 1 and 3).
				return lw.challenge()
			}
			if fwd && m.Type == coap.Confirmable {
				if _, ok := w.(coap.PromptWriter); ok {
					lw.mu.Lock()
					lw.timer = time.AfterFunc(echoDeadline, lw.expire)
					lw.mu.Unlock()
				}
			}
			err := next.ServeCoAP(ctx, ww, r)
			if err == nil || errors.Is(err, coap.ErrLater) {
				return err
			}
			// The endpoint would write the error's response itself, past
			// the limit; it goes through the limit instead.
			if lw.answerError(err) {
				return nil
			}
			return err
		})
	}
}

// withoutEcho is r without its Echo option.
func withoutEcho(r *coap.Request) *coap.Request {
	req := *r
	m := *r.Msg
	m.Options = append(coap.Options(nil), r.Msg.Options...).Remove(coap.Echo)
	req.Msg = &m
	return &req
}

// limitWriter answers an unverified client within the limit: the
// amplification stage's part of the writer it hands on (coap.Wrapper).
// Every answer goes at once or, if small enough to be retransmitted, not
// at all, whichever way it was written.
type limitWriter struct {
	w      coap.ResponseWriter
	v      *verifier
	peer   netip.Addr
	tokLen int  // the request's token, which the answer carries
	limit  int  // bytes the answer may take
	safe   bool // GET or FETCH: a 4.01 does not hide a change made

	mu    sync.Mutex
	done  bool        // guarded by mu: answered, or given up
	timer *time.Timer // guarded by mu: echoDeadline
}

var _ coap.Wrapper = (*limitWriter)(nil)

// size is what resp takes as the answer: with the request's token.
func (l *limitWriter) size(resp *coap.Message) int {
	return resp.Size() - len(resp.Token) + l.tokLen
}

func (l *limitWriter) Write(_ coap.Next, resp *coap.Message) error { return l.write(resp) }

// write answers with resp, or what of it fits the limit.
func (l *limitWriter) write(resp *coap.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return coap.ErrAnswered
	}
	l.done = true
	if l.timer != nil {
		l.timer.Stop()
	}
	return l.sendLocked(l.fit(resp))
}

// Finish ends a request answered later: an error not yet answered is
// answered within the limit first.
func (l *limitWriter) Finish(next coap.Next, err error) {
	if err != nil && !errors.Is(err, coap.ErrLater) && l.answerError(err) {
		err = nil
	}
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	next.Finish(err)
}

// answerError writes err's response within the limit, unless an answer
// went already; it reports whether it did.
func (l *limitWriter) answerError(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return false
	}
	l.done = true
	if l.timer != nil {
		l.timer.Stop()
	}
	var ce *coap.Error
	resp := &coap.Message{Code: coap.InternalServerError}
	if errors.As(err, &ce) {
		resp = ce.Response()
	}
	l.sendLocked(l.fit(resp))
	return true
}

// expire answers with the challenge a CON request whose answer has not
// come by echoDeadline, while it can still be piggybacked.
func (l *limitWriter) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.v.challenges.Add(1)
	if err := coap.WritePrompt(l.w, l.challengeMessage()); err != nil {
		// ErrSeparate: too late already. The answer may still go, if it
		// is small enough to go as a separate response.
		l.v.challenges.Add(^uint64(0))
		return
	}
	l.done = true
}

// challenge answers at once with 4.01 and an Echo option.
func (l *limitWriter) challenge() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	return l.sendLocked(fitted{l.challengeMessage(), true})
}

// challengeMessage is 4.01 with an Echo value for the client's address;
// without it if even that would exceed the limit (a request of a few
// bytes, which names nothing large).
func (l *limitWriter) challengeMessage() *coap.Message {
	m := &coap.Message{Code: coap.Unauthorized}
	m.Options = m.Options.Set(coap.Echo, l.v.echo(l.peer))
	if l.size(m) > l.limit {
		m.Options = nil
	}
	return m
}

// fitted is an answer as it may go: challenge marks a 4.01 with Echo,
// which must never go as a separate response.
type fitted struct {
	m         *coap.Message
	challenge bool
}

// fit makes resp fit the limit: as it is when it does; an error without
// its diagnostic payload (RFC 7252 §5.5.2 makes it optional); for a safe
// request, the challenge; for an unsafe one, which was processed, the
// response without payload, or its bare code.
func (l *limitWriter) fit(resp *coap.Message) fitted {
	if l.size(resp) <= l.limit {
		return fitted{resp, false}
	}
	if resp.Code.Class() < 4 && l.safe {
		return fitted{l.challengeMessage(), true}
	}
	// The bare code always fits: it is no longer than the request.
	cut := *resp
	cut.Payload = nil
	if l.size(&cut) > l.limit {
		cut.Options = nil
	}
	l.v.trimmed.Add(1)
	return fitted{&cut, false}
}

// sendLocked writes f at once; if the answer would be a separate
// response, only what may go as one: not a challenge, and nothing whose
// retransmissions with the empty ACK before them exceed the limit.
func (l *limitWriter) sendLocked(f fitted) error {
	if f.challenge {
		// Counted before it goes, so that whoever has the answer finds
		// it counted; taken back if it does not go.
		l.v.challenges.Add(1)
	}
	err := coap.WritePrompt(l.w, f.m)
	sent := err == nil
	if errors.Is(err, coap.ErrSeparate) {
		if f.challenge || 4+separateCopies*l.size(f.m) > l.limit {
			l.v.dropped.Add(1)
			err, sent = nil, false
		} else {
			err = l.w.WriteResponse(f.m)
			sent = err == nil
		}
	}
	if f.challenge && !sent {
		l.v.challenges.Add(^uint64(0))
	}
	return err
}
