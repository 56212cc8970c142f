package e2e

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// dir is the direction a datagram travels through the relay.
type dir int

const (
	up   dir = iota // client → server
	down            // server → client
)

func (d dir) String() string { return [...]string{"up", "down"}[d] }

// hook decides what the misbehaving proxy does with one message: call fwd
// zero times (drop), once (forward, possibly modified), several times
// (duplicate), or later from another goroutine (delay, reorder). m is the
// relay's own copy. client names the client the exchange belongs to.
type hook func(d dir, client netip.AddrPort, m *coap.Message, fwd func(*coap.Message))

// relay is the misbehaving proxy of the seed (§2: "perform the attacks of a
// man-in-the-middle"). It works on datagrams, so it can do anything a
// proxy can: read, modify, inject, replay, reorder, swap, delay, drop. Each
// client gets its own upstream socket, so to the server every client looks
// like a different peer, as behind a real proxy.
type relay struct {
	t      *testing.T
	front  *net.UDPConn
	server netip.AddrPort
	wg     sync.WaitGroup

	mu    sync.Mutex
	hook  hook                            // guarded by mu; nil forwards everything
	backs map[netip.AddrPort]*net.UDPConn // guarded by mu: upstream socket per client
	seen  []seenDatagram                  // guarded by mu: everything that passed
	wire  []seenDatagram                  // guarded by mu: everything the relay wrote
	edits []edit                          // guarded by mu: messages a hook changed
}

type seenDatagram struct {
	d      dir
	client netip.AddrPort
	data   []byte
}

// edit is one message a hook changed: its bytes as the relay received
// them and as it sent them on. before is nil for a message the relay made
// up in place of the one it got.
type edit struct {
	d             dir
	before, after []byte
}

func newRelay(t *testing.T, server netip.AddrPort) *relay {
	t.Helper()
	front := udpSocket(t)
	r := &relay{t: t, front: front, server: server, backs: map[netip.AddrPort]*net.UDPConn{}}
	r.wg.Add(1)
	go r.readFront()
	t.Cleanup(r.close)
	return r
}

func udpSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// addr is where clients send: the proxy's address.
func (r *relay) addr() netip.AddrPort { return r.front.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *relay) setHook(h hook) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

func (r *relay) close() {
	r.front.Close()
	r.mu.Lock()
	for _, b := range r.backs {
		b.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *relay) readFront() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, client, err := r.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.handle(up, client, bytes.Clone(buf[:n]))
	}
}

func (r *relay) back(client netip.AddrPort) *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.backs[client]; ok {
		return b
	}
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil
	}
	r.backs[client] = b
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, _, err := b.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.handle(down, client, bytes.Clone(buf[:n]))
		}
	}()
	return b
}

func (r *relay) handle(d dir, client netip.AddrPort, data []byte) {
	r.mu.Lock()
	r.seen = append(r.seen, seenDatagram{d, client, data})
	h := r.hook
	r.mu.Unlock()
	var m coap.Message
	if err := m.Decode(data); err != nil || h == nil {
		r.sendRaw(d, client, data)
		return
	}
	h(d, client, m.Clone(), func(out *coap.Message) { r.send(d, client, out) })
}

// send injects a message towards the server (up) or the client (down) of
// the given client's exchange.
func (r *relay) send(d dir, client netip.AddrPort, m *coap.Message) {
	b, err := m.Marshal()
	if err != nil {
		r.t.Errorf("relay: %v", err)
		return
	}
	r.sendRaw(d, client, b)
}

func (r *relay) sendRaw(d dir, client netip.AddrPort, b []byte) {
	r.mu.Lock()
	r.wire = append(r.wire, seenDatagram{d, client, bytes.Clone(b)})
	r.mu.Unlock()
	if d == up {
		if c := r.back(client); c != nil {
			c.WriteToUDPAddrPort(b, r.server)
		}
		return
	}
	r.front.WriteToUDPAddrPort(b, client)
}

// modify applies f to a copy of m and records the change: what a hook
// that tampers with a message calls before it forwards the result.
func (r *relay) modify(d dir, m *coap.Message, f func(*coap.Message)) *coap.Message {
	before, err := m.Marshal()
	if err != nil {
		r.t.Errorf("relay: %v", err)
	}
	out := m.Clone()
	f(out)
	r.recordEdit(d, before, out)
	return out
}

// recordEdit records that the relay sends after in place of before.
func (r *relay) recordEdit(d dir, before []byte, after *coap.Message) {
	b, err := after.Marshal()
	if err != nil {
		r.t.Errorf("relay: %v", err)
		return
	}
	r.recordRawEdit(d, before, b)
}

func (r *relay) recordRawEdit(d dir, before, after []byte) {
	r.mu.Lock()
	r.edits = append(r.edits, edit{d, bytes.Clone(before), bytes.Clone(after)})
	r.mu.Unlock()
}

// onPayload applies f to the first message with a body in direction want
// and forwards everything.
func (r *relay) onPayload(want dir, f func(m *coap.Message)) hook {
	var once sync.Once
	return func(d dir, _ netip.AddrPort, m *coap.Message, fwd func(*coap.Message)) {
		if d == want && isPayloadMsg(m) {
			once.Do(func() { m = r.modify(d, m, f) })
		}
		fwd(m)
	}
}

// mustHaveTampered fails t unless a hook changed a message going in
// direction d, the relay wrote the changed bytes to its socket, and
// intended, given the message as received and as sent, says the change
// is the one the test means (before is empty for a made-up message). A
// relay that forwards what it should tamper with cannot make a test
// that calls this pass.
func (r *relay) mustHaveTampered(t *testing.T, d dir, intended func(before, after *coap.Message) bool) {
	t.Helper()
	r.mustHaveTamperedRaw(t, d, func(before, after []byte) bool {
		var b, a coap.Message
		if before != nil && b.Decode(before) != nil || a.Decode(after) != nil {
			return false
		}
		return intended(&b, &a)
	})
}

// mustHaveTamperedRaw is mustHaveTampered on the datagrams' bytes.
func (r *relay) mustHaveTamperedRaw(t *testing.T, d dir, intended func(before, after []byte) bool) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.edits {
		if e.d != d || bytes.Equal(e.before, e.after) || !intended(e.before, e.after) {
			continue
		}
		for _, w := range r.wire {
			if w.d == d && bytes.Equal(w.data, e.after) {
				return
			}
		}
	}
	t.Fatalf("relay: no %v message was changed as the test intends and sent on (%d edits recorded)", d, len(r.edits))
}

// onlyPayloadChanged: the payload differs, code and options do not.
func onlyPayloadChanged(b, a *coap.Message) bool {
	return !bytes.Equal(b.Payload, a.Payload) && b.Code == a.Code && b.Options.Equal(a.Options)
}

// wrote reports whether the relay wrote exactly data in direction d on
// the given client's behalf (up: from the client's upstream socket).
func (r *relay) wrote(d dir, client netip.AddrPort, data []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.wire {
		if w.d == d && w.client == client && bytes.Equal(w.data, data) {
			return true
		}
	}
	return false
}

// saw reports whether needle occurs in any datagram that passed the relay:
// what a proxy can read.
func (r *relay) saw(needle []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seen {
		if bytes.Contains(s.data, needle) {
			return true
		}
	}
	return false
}

// messages returns the decoded messages that passed in direction d.
func (r *relay) messages(d dir) []*coap.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*coap.Message
	for _, s := range r.seen {
		var m coap.Message
		if s.d == d && m.Decode(s.data) == nil {
			out = append(out, m.Clone())
		}
	}
	return out
}

// renew gives a copied message a new message ID and, for a request, a new
// token: what a proxy that replays or injects does, so that the message
// layer's deduplication (RFC 7252 §4.5) does not hide it from the
// end-to-end layer under test.
//
// Message IDs come from a counter, not at random, and are never the
// original's: two messages with one ID from one sender are one message to
// the receiver's deduplication (RFC 7252 §4.5), and a test counting
// rejections would miss one.
func renew(m *coap.Message, newToken bool) *coap.Message {
	c := m.Clone()
	for c.MID = uint16(renewMID.Add(1)); c.MID == m.MID; {
		c.MID = uint16(renewMID.Add(1)) // never the original's own ID
	}
	if c.Type == coap.Acknowledgement {
		c.Type = coap.NonConfirmable
	}
	if newToken {
		c.Token = binary.BigEndian.AppendUint64(nil, rand.Uint64())
	}
	return c
}

// renewMID numbers renew's copies, from a random start.
var renewMID atomic.Uint32

func init() { renewMID.Store(rand.Uint32()) }

// isPayloadMsg is true for requests and responses with a body: not the
// empty ACKs and RSTs of the message layer.
func isPayloadMsg(m *coap.Message) bool { return m.Code != coap.Empty }

// ---- endpoints ----

func endpoint(t *testing.T, h coap.Handler) (*coap.Endpoint, netip.AddrPort) {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: h})
	t.Cleanup(func() { e.Close() })
	return e, u.LocalAddr()
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// secret is a master secret for tests; each pair gets its own.
func secret(i byte) []byte { return bytes.Repeat([]byte{i}, 16) }

// oscorePair returns a client and a server context that share a master
// secret: the security association of the seed (§2).
func oscorePair(t *testing.T, sec []byte, clientID []byte, window int) (client, server *oscore.Context) {
	t.Helper()
	var err error
	client, err = oscore.NewContext(oscore.Config{Params: oscore.Params{MasterSecret: sec, SenderID: clientID, RecipientID: []byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	server, err = oscore.NewContext(oscore.Config{Params: oscore.Params{MasterSecret: sec, SenderID: []byte{}, RecipientID: clientID}, ReplayWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// verified is a request the OSCORE server accepted.
type verified struct {
	req *coap.Message
	ex  *oscore.Exchange
}

// oscoreServer answers OSCORE requests with the contexts of its keyring and
// reports every request it verified and every verification error.
type oscoreServer struct {
	e    *coap.Endpoint
	addr netip.AddrPort
	ring oscore.Keyring
	ok   chan verified
	errs chan error

	mu        sync.Mutex
	observers []observer // guarded by mu
}

type observer struct {
	w  coap.NotifyWriter
	ex *oscore.Exchange
}

func newOSCOREServer(t *testing.T, ctxs ...*oscore.Context) *oscoreServer {
	t.Helper()
	s := &oscoreServer{ok: make(chan verified, 64), errs: make(chan error, 64)}
	for _, c := range ctxs {
		s.ring.Add(c)
	}
	s.e, s.addr = endpoint(t, coap.HandlerFunc(s.serve))
	return s
}

func (s *oscoreServer) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	req, ex, err := s.ring.UnprotectRequest(r.Msg)
	if err != nil {
		s.errs <- err
		if e, ok := oscore.ErrorResponse(r.Msg, err); ok {
			return w.WriteResponse(e)
		}
		return coap.Errorf(coap.BadRequest, "%v", err)
	}
	s.ok <- verified{req, ex}
	// The application: echo the path and the method it saw, Max-Age 0 as
	// §3.1 asks of responses securely linked to one request.
	path := strings.Join(coap.URIFromOptions(req.Options, "", "", 0).Path, "/")
	resp := &coap.Message{Code: coap.Content, Payload: []byte(req.Code.String() + " " + path)}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 0)
	if ex.Observe() {
		resp.Options = resp.Options.SetUint(coap.Observe, 0)
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		s.mu.Lock()
		s.observers = append(s.observers, observer{nw, ex})
		s.mu.Unlock()
	}
	p, err := ex.ProtectResponse(resp)
	if err != nil {
		return err
	}
	return w.WriteResponse(p)
}

// notify sends a protected notification to every observer (NON).
func (s *oscoreServer) notify(t *testing.T, n uint32, payload string) {
	t.Helper()
	s.mu.Lock()
	obs := append([]observer(nil), s.observers...)
	s.mu.Unlock()
	for _, o := range obs {
		m := &coap.Message{Code: coap.Content, Payload: []byte(payload)}
		m.Options = m.Options.SetUint(coap.Observe, n).SetUint(coap.ContentFormat, 0)
		p, err := o.ex.ProtectResponse(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.w.Notify(p, false, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *oscoreServer) waitObservers(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%d observers registered", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.observers) >= n
	})
}

// nextErr waits for the server's next verification error.
func (s *oscoreServer) nextErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("server reported no verification error")
		return nil
	}
}

func (s *oscoreServer) nextOK(t *testing.T) verified {
	t.Helper()
	select {
	case v := <-s.ok:
		return v
	case err := <-s.errs:
		t.Fatalf("server rejected the request: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server verified no request")
	}
	return verified{}
}

// noMore asserts the server verified nothing else and reported no error.
func (s *oscoreServer) quiet(t *testing.T) {
	t.Helper()
	select {
	case v := <-s.ok:
		t.Fatalf("server verified an unexpected request: %v", v.req)
	case err := <-s.errs:
		t.Fatalf("server reported an unexpected error: %v", err)
	default:
	}
}

// oscoreClient is a client endpoint with its context.
type oscoreClient struct {
	e    *coap.Endpoint
	addr netip.AddrPort
	osc  *oscore.Context
}

func newOSCOREClient(t *testing.T, c *oscore.Context) *oscoreClient {
	t.Helper()
	e, addr := endpoint(t, nil)
	return &oscoreClient{e: e, addr: addr, osc: c}
}

func getReq(path string) *coap.Message {
	m := &coap.Message{Code: coap.GET}
	m.Options = m.Options.Insert(coap.URIPath, []byte(path))
	return m
}

// do protects req, sends it to dst and unprotects the response. err is the
// message layer's or the verification's.
func (c *oscoreClient) do(ctx context.Context, dst netip.AddrPort, req *coap.Message) (*coap.Message, *oscore.Exchange, error) {
	p, ex, err := c.osc.ProtectRequest(req)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.e.Do(ctx, dst, p)
	if err != nil {
		return nil, ex, err
	}
	if !resp.Options.Has(coap.OSCORE) {
		return resp, ex, errUnprotected
	}
	m, err := ex.UnprotectResponse(resp)
	return m, ex, err
}

var errUnprotected = errors.New("e2e test: unprotected response")

// ---- signed origin ----

// sigOrigin serves signed representations: GET /name returns the current
// value of name signed for its URI, with the Content-Format of the value;
// FETCH (RFC 8132) returns the value its payload names; DELETE removes
// the value.
type sigOrigin struct {
	addr   netip.AddrPort
	e      *coap.Endpoint
	signer keySigner
	group  *signed.GroupKey // set: representations are sealed

	mu     sync.Mutex
	values map[string]value // guarded by mu
	gets   int              // guarded by mu: requests served
	got    []*coap.Message  // guarded by mu: the requests, as received
}

type value struct {
	cf      uint16
	payload string
}

// host is the Uri-Host clients put in their requests: the resource URIs
// are "coap://node7.example/name".
const host = "node7.example"

func resourceURI(name string) string { return "coap://" + host + "/" + name }

func newSigOrigin(t *testing.T, s keySigner) *sigOrigin {
	t.Helper()
	o := &sigOrigin{signer: s, values: map[string]value{}}
	o.mu.Lock() // the handler may run before the address is stored
	defer o.mu.Unlock()
	o.e, o.addr = endpoint(t, coap.HandlerFunc(o.serve))
	return o
}

func (o *sigOrigin) set(name string, cf uint16, payload string) {
	o.mu.Lock()
	o.values[name] = value{cf, payload}
	o.mu.Unlock()
}

func (o *sigOrigin) served() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gets
}

// requests are the requests the origin received, in order.
func (o *sigOrigin) requests() []*coap.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*coap.Message(nil), o.got...)
}

func (o *sigOrigin) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	// Named by Uri-Host (node7.example), or, through a proxy that split
	// a Proxy-Uri with an IP literal, by this origin's own address.
	o.mu.Lock()
	u := coap.URIFromOptions(r.Msg.Options, "coap", o.addr.Addr().String(), o.addr.Port())
	if r.Msg.Options.Has(coap.URIHost) {
		u = coap.URIFromOptions(r.Msg.Options, "coap", "", 5683)
	}
	name := strings.Join(u.Path, "/")
	o.got = append(o.got, r.Msg.Clone())
	o.gets++
	switch r.Msg.Code {
	case coap.FETCH:
		// The body names the value; the representation is bound to it.
		name = string(r.Msg.Payload)
		u = coap.URIFromOptions(nil, "coap", host, 5683)
		u.Path = []string{name}
	case coap.DELETE:
		_, ok := o.values[name]
		delete(o.values, name)
		o.mu.Unlock()
		if !ok {
			return coap.Errorf(coap.NotFound, "")
		}
		return w.WriteResponse(&coap.Message{Code: coap.Deleted})
	}
	v, ok := o.values[name]
	group := o.group
	o.mu.Unlock()
	if !ok {
		return coap.Errorf(coap.NotFound, "")
	}
	resp, err := o.representation(u.String(), v, group)
	if err != nil {
		return err
	}
	return w.WriteResponse(resp)
}

func (o *sigOrigin) representation(uri string, v value, group *signed.GroupKey) (*coap.Message, error) {
	var rep []byte
	var err error
	cf := signed.ContentFormatCOSESign1
	if group != nil {
		rep, err = o.signer.Seal(uri, v.cf, []byte(v.payload), *group)
		cf = signed.ContentFormatCOSEEncrypt0
	} else {
		rep, err = o.signer.Sign(uri, v.cf, []byte(v.payload))
	}
	if err != nil {
		return nil, err
	}
	m := &coap.Message{Code: coap.Content, Payload: rep}
	m.Options = m.Options.SetUint(coap.ContentFormat, uint32(cf)).SetUint(coap.MaxAge, 60).Insert(coap.ETag, []byte{byte(len(rep))})
	return m, nil
}

// keySigner is a signer with its public key, as a verifier is given it.
type keySigner struct {
	*signed.Signer
	pub crypto.PublicKey
}

func newSigner(t *testing.T, kid string) keySigner {
	t.Helper()
	key, err := signed.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signed.NewSigner(signed.SignerConfig{Key: key, KID: []byte(kid)})
	if err != nil {
		t.Fatal(err)
	}
	return keySigner{s, key.Public()}
}

// verifierFor trusts the public keys of the given signers under their kids.
func verifierFor(t *testing.T, signers ...keySigner) *signed.Verifier {
	t.Helper()
	v := signed.NewVerifier(signed.VerifierConfig{})
	for _, s := range signers {
		if err := v.AddKey(s.KID(), s.pub); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// sigGet sends a plain GET for name with Uri-Host and returns the response.
func sigGet(t *testing.T, e *coap.Endpoint, dst netip.AddrPort, name string) (*coap.Message, error) {
	t.Helper()
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIHost, []byte(host))
	for _, seg := range strings.Split(name, "/") {
		req.Options = req.Options.Insert(coap.URIPath, []byte(seg))
	}
	return e.Do(timeout(t, 5*time.Second), dst, req)
}

func expectURI(uri string) signed.Expectation {
	return signed.Expectation{URI: uri, ContentFormat: 0}
}

// expect is what a client that asked for name as text/plain expects.
func expect(name string) signed.Expectation {
	return signed.Expectation{URI: resourceURI(name), ContentFormat: 0}
}

// ---- broker ----

// broker is an honest pub-sub broker (seed §3.5, PR5.1, PR5.2) holding no
// keys: PUT stores a representation on a topic and notifies the
// subscribers; GET with Observe subscribes. The misbehaving broker of the
// tests is this broker behind the relay.
type broker struct {
	addr netip.AddrPort

	mu     sync.Mutex
	topics map[string]*topic // guarded by mu
}

type topic struct {
	cf   uint32
	rep  []byte
	seq  uint32
	subs []coap.NotifyWriter
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{topics: map[string]*topic{}}
	_, b.addr = endpoint(t, coap.HandlerFunc(b.serve))
	return b
}

func (b *broker) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	name := strings.Join(coap.URIFromOptions(r.Msg.Options, "", "", 0).Path, "/")
	b.mu.Lock()
	defer b.mu.Unlock()
	tp := b.topics[name]
	if tp == nil {
		tp = &topic{}
		b.topics[name] = tp
	}
	switch r.Msg.Code {
	case coap.PUT:
		tp.cf, _ = r.Msg.Options.Uint(coap.ContentFormat)
		tp.rep = bytes.Clone(r.Msg.Payload)
		tp.seq++
		for _, s := range tp.subs {
			s.Notify(tp.message(true), false, nil)
		}
		return w.WriteResponse(&coap.Message{Code: coap.Changed})
	case coap.GET:
		if tp.rep == nil {
			return coap.Errorf(coap.NotFound, "")
		}
		_, obs := r.Msg.Options.Uint(coap.Observe)
		if obs {
			nw, ok := w.(coap.NotifyWriter)
			if !ok {
				return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
			}
			tp.subs = append(tp.subs, nw)
		}
		return w.WriteResponse(tp.message(obs))
	}
	return coap.Errorf(coap.MethodNotAllowed, "")
}

func (tp *topic) message(obs bool) *coap.Message {
	m := &coap.Message{Code: coap.Content, Payload: tp.rep}
	m.Options = m.Options.SetUint(coap.ContentFormat, tp.cf)
	if obs {
		m.Options = m.Options.SetUint(coap.Observe, tp.seq)
	}
	return m
}

// publish PUTs a signed representation of value on topic name.
func publish(t *testing.T, e *coap.Endpoint, dst netip.AddrPort, s keySigner, name string, cf uint16, payload string) error {
	t.Helper()
	rep, err := s.Sign(resourceURI(name), cf, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	req := &coap.Message{Code: coap.PUT, Payload: rep}
	req.Options = req.Options.Insert(coap.URIPath, []byte(name)).SetUint(coap.ContentFormat, uint32(signed.ContentFormatCOSESign1))
	resp, err := e.Do(timeout(t, 2*time.Second), dst, req)
	if err == nil && resp.Code != coap.Changed {
		t.Fatalf("publish: %v", resp.Code)
	}
	return err
}

// subscription collects the notifications of one observation.
type subscription struct {
	first *coap.Message
	notes chan *coap.Message
}

func subscribe(t *testing.T, e *coap.Endpoint, dst netip.AddrPort, name string) *subscription {
	t.Helper()
	s := &subscription{notes: make(chan *coap.Message, 64)}
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIPath, []byte(name))
	first, obs, err := e.Observe(timeout(t, 5*time.Second), dst, req, func(m *coap.Message) {
		select {
		case s.notes <- m:
		default:
		}
	})
	if err != nil || obs == nil {
		t.Fatalf("subscribe %s: %v (registered: %v)", name, err, obs != nil)
	}
	s.first = first
	return s
}

func (s *subscription) next(t *testing.T, wait time.Duration) (*coap.Message, bool) {
	t.Helper()
	select {
	case m := <-s.notes:
		return m, true
	case <-time.After(wait):
		return nil, false
	}
}
