package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
)

// Node defaults.
const (
	DefaultNodeQueue = 32              // received frames a node buffers
	TempPeriod       = 3 * time.Second // how often /sensors/temp changes
)

// NodeConfig configures a simulated node.
type NodeConfig struct {
	// ExtAddr is the node's extended address (required). Its IPv6
	// addresses derive from it (RFC 4944 §6, RFC 6282 §3.2.2).
	ExtAddr mac.Addr
	// ShortAddr, if set, is a short address the node also answers to and
	// sends from; its IPv6 address then derives from the short address.
	ShortAddr mac.Addr
	PANID     uint16
	Prefix    netip.Prefix // the network's /64
	// Params are the node's CoAP transmission parameters (zero: RFC 7252).
	Params coap.Params
	// QueueLen bounds received frames not yet taken by the node's Conn;
	// more are dropped (but acknowledged, as a radio acks in hardware).
	// Zero means DefaultNodeQueue.
	QueueLen int
	// Handler, if not nil, serves requests instead of the built-in
	// resources (Requests still counts them).
	Handler coap.Handler
	// Base is added to the temperature, so nodes read differently.
	Base   float64
	Logger *slog.Logger // nil: discard
	// OSCORE, if set, verifies OSCORE requests (RFC 8613) and protects
	// their responses: /oscore/temp is served, and only protected; every
	// other resource may be asked for protected too. Unset, an OSCORE
	// request gets 4.02 (Bad Option), as at a node without OSCORE.
	OSCORE OSCOREServer
	// Signer, if set, signs the reading served at /signed/temp and by
	// SignReading.
	Signer Signer
	// FrameVersion, SuppressSeq and IEs shape the frames the node sends,
	// as radio.ConnConfig's do: mac.Version2015 with IEs is what Thread
	// 1.2 (CSL), Contiki-NG (TSCH) and Wi-SUN nodes send. Zero: 2003
	// frames.
	FrameVersion uint8
	SuppressSeq  bool
	IEs          []byte
	// Groups are the multicast addresses the node receives group
	// requests at (radio.ConnConfig.Groups); none: it joins All CoAP
	// Nodes (AllCoAPNodes).
	Groups []netip.Addr
	// Leisure bounds the random wait before the node answers a group
	// request (RFC 7252 §8.2); zero answers at once.
	Leisure time.Duration
	// Attenuation is the node's path loss in dB, on a Medium whose
	// stations take one (Attenuator): how far it is from the gateway.
	Attenuation float64
}

// Node is a simulated constrained device: a station on a Medium with its
// own MAC address, a radio.Conn over it and a CoAP server with
// /sensors/temp (GET, observable), /actuators/valve (GET, PUT "open" or
// "closed"), /echo (any method, payload and Content-Format back) and
// /.well-known/core; with NodeConfig.OSCORE also /oscore/temp (OSCORE
// only, observable), with NodeConfig.Signer also /signed/temp (a signed
// representation, observable).
type Node struct {
	cfg       NodeConfig
	link      *stationLink
	conn      *radio.Conn
	ep        *coap.Endpoint
	start     time.Time
	signedURI string // the URI /signed/temp representations are bound to
	core      []byte // the /.well-known/core document
	requests  atomic.Uint64
	groupReqs atomic.Uint64
	once      sync.Once
	recent    recentGroup // group requests lately read, to tell them from unicast ones

	mu        sync.Mutex
	valve     string     // guarded by mu
	lastGroup []byte     // guarded by mu: the last group request, as it came
	observers []observer // guarded by mu
	signStep  int        // guarded by mu: the step signRep is the reading of
	signRep   []byte     // guarded by mu: the latest signed representation, or nil
	stop      chan struct{}
	wg        sync.WaitGroup
}

// observer is one observation of one of the node's resources.
type observer struct {
	w   coap.NotifyWriter
	res string   // the resource's path
	ex  Exchange // non-nil: an OSCORE observation, notifications protected
}

// maxNodeObservers bounds a node's observers of all its resources, as a
// constrained device's memory would.
const maxNodeObservers = 4

// Paths of the protected resources.
const (
	pathTemp       = "/sensors/temp"
	pathOSCORETemp = "/oscore/temp"
	pathSignedTemp = "/signed/temp"
)

// cfCOSESign1 is the CoAP Content-Format of a COSE_Sign1 object
// (application/cose; cose-type="cose-sign1", RFC 9052 §9.1).
const cfCOSESign1 = 18

// NewNode joins a node to m and starts its CoAP server. Close stops it.
func NewNode(m Medium, cfg NodeConfig) (*Node, error) {
	if cfg.ExtAddr.Mode() != mac.AddrExtended {
		return nil, fmt.Errorf("sim: node: extended address %v: want a 64-bit address", cfg.ExtAddr)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultNodeQueue
	}
	n := &Node{cfg: cfg, start: time.Now(), valve: "closed", stop: make(chan struct{})}
	n.link = &stationLink{
		ext: cfg.ExtAddr, short: cfg.ShortAddr, pan: cfg.PANID,
		rx: make(chan radio.Frame, cfg.QueueLen), done: make(chan struct{}),
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n.link.st = m.Join(n.link.receive)
	if len(cfg.Groups) == 0 {
		cfg.Groups = AllCoAPNodes
		n.cfg.Groups = AllCoAPNodes
	}
	if a, ok := n.link.st.(Attenuator); ok && cfg.Attenuation != 0 {
		a.SetAttenuation(cfg.Attenuation)
	}
	conn, err := radio.NewConn(n.link, radio.ConnConfig{
		Prefix: cfg.Prefix, PANID: cfg.PANID, ExtAddr: cfg.ExtAddr, ShortAddr: cfg.ShortAddr,
		FrameVersion: cfg.FrameVersion, SuppressSeq: cfg.SuppressSeq, IEs: cfg.IEs, Groups: cfg.Groups,
		Logger: log.With("component", "sim-node", "ext_addr", cfg.ExtAddr),
	})
	if err != nil {
		n.link.Close()
		return nil, fmt.Errorf("sim: node %v: %w", cfg.ExtAddr, err)
	}
	n.conn = conn
	n.signedURI = (&coap.URI{Scheme: "coap", Host: n.Addr().String(), Port: coap.DefaultPort("coap"), Path: []string{"signed", "temp"}}).String()
	n.core = []byte(wellKnownCore)
	if cfg.OSCORE != nil {
		n.core = append(n.core, coreOSCORE...)
	}
	if cfg.Signer != nil {
		n.core = append(n.core, coreSigned...)
	}
	var h coap.Handler = coap.HandlerFunc(n.serve)
	if cfg.Handler != nil {
		h = coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			n.requests.Add(1)
			return cfg.Handler.ServeCoAP(ctx, w, r)
		})
	}
	n.ep = coap.NewEndpoint(groupConn{conn, n}, coap.EndpointConfig{
		Handler: h, Params: cfg.Params,
		Logger: log.With("component", "sim-node", "addr", n.Addr()),
	})
	n.wg.Add(1)
	go n.notifyLoop()
	return n, nil
}

// notifyLoop sends a notification to every observer each time the reading
// changes (RFC 7641 §4.2), CON every fifth so that a gone observer is
// noticed (§4.5). A resource's notification is built (and signed) once
// for all its observers; an OSCORE observer's is protected with its own
// Exchange (RFC 8613 §4.1.3.5, §8.3).
func (n *Node) notifyLoop() {
	defer n.wg.Done()
	for {
		_, _, left := n.temp()
		select {
		case <-n.stop:
			return
		case <-time.After(left + time.Millisecond):
		}
		n.mu.Lock()
		obs := slices.Clone(n.observers)
		n.mu.Unlock()
		built := make(map[string]*coap.Message, 3)
		for _, o := range obs {
			resp, ok := built[o.res]
			if !ok {
				r, step, err := n.reading(o.res)
				if err == nil {
					r.Options = r.Options.SetUint(coap.Observe, uint32(step)&0xffffff)
				}
				resp, built[o.res] = r, r // nil if it failed
			}
			if resp == nil {
				continue
			}
			step, _ := resp.Options.Uint(coap.Observe)
			if o.ex != nil {
				p, err := o.ex.ProtectResponse(resp)
				if err != nil { // e.g. sequence numbers exhausted: end it
					n.dropObserver(o.w)
					continue
				}
				resp = p
			}
			w := o.w
			w.Notify(resp, step%5 == 0, func(err error) {
				if err != nil { // RST or no ACK: the observer is gone
					n.dropObserver(w)
				}
			})
		}
	}
}

func (n *Node) dropObserver(w coap.NotifyWriter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.observers = slices.DeleteFunc(n.observers, func(o observer) bool { return o.w == w })
}

// Observers is how many observations of all its resources the node has.
func (n *Node) Observers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.observers)
}

func (n *Node) tempResponse() (int, *coap.Message) {
	step, v, left := n.temp()
	resp := &coap.Message{Code: coap.Content, Payload: []byte(v)}
	resp.Options = resp.Options.Insert(coap.ETag, []byte(strconv.Itoa(step%40)))
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
	resp.Options = resp.Options.SetUint(coap.MaxAge, uint32((left+time.Second-1)/time.Second))
	return step, resp
}

// Addr is the node's IPv6 address in the prefix: the one it answers from.
func (n *Node) Addr() netip.Addr { return n.conn.LocalAddr().Addr() }

// ExtAddr is the node's extended address.
func (n *Node) ExtAddr() mac.Addr { return n.cfg.ExtAddr }

// Requests counts the requests the node's CoAP server handled
// (retransmissions the message layer recognised are not counted).
func (n *Node) Requests() uint64 { return n.requests.Load() }

// QueueDrops counts frames for the node dropped on a full queue.
func (n *Node) QueueDrops() uint64 { return n.link.drops.Load() }

// Conn is the node's UDP transport.
func (n *Node) Conn() *radio.Conn { return n.conn }

// Endpoint is the node's CoAP endpoint, for a node that sends requests
// of its own.
func (n *Node) Endpoint() *coap.Endpoint { return n.ep }

// GroupRequests counts the group requests the node received (each
// counts in Requests too).
func (n *Node) GroupRequests() uint64 { return n.groupReqs.Load() }

// LastGroupRequest is the last group request the node received, encoded
// as it came (message ID and token included), or nil.
func (n *Node) LastGroupRequest() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.lastGroup)
}

// Groups are the multicast addresses the node has joined.
func (n *Node) Groups() []netip.Addr { return slices.Clone(n.cfg.Groups) }

// Valve is the valve's state, "open" or "closed".
func (n *Node) Valve() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.valve
}

// Close stops the CoAP server and the Conn and leaves the medium. It is
// idempotent and waits for the node's goroutines.
func (n *Node) Close() error {
	n.once.Do(func() {
		close(n.stop)
		n.wg.Wait()
		n.ep.Close() // closes the Conn
		n.link.Close()
	})
	return nil
}

// temp is the reading now: Base + 21.0 °C plus a tenth per TempPeriod,
// wrapping after 4 °C, and how long it stays.
func (n *Node) temp() (step int, value string, left time.Duration) {
	el := time.Since(n.start)
	step = int(el / TempPeriod)
	tenths := int(n.cfg.Base*10) + 210 + step%40
	left = TempPeriod - el%TempPeriod
	return step, strconv.Itoa(tenths/10) + "." + strconv.Itoa(tenths%10), left
}

const (
	wellKnownCore = `</sensors/temp>;rt="temperature-c";ct=0;obs,</actuators/valve>;rt="valve";ct=0,</echo>`
	// osc: the resource is accessed with OSCORE (RFC 8613 §9).
	coreOSCORE = `,</oscore/temp>;rt="temperature-c";ct=0;obs;osc`
	coreSigned = `,</signed/temp>;rt="temperature-c";ct=18;obs`
)

// serve verifies an OSCORE request if it is one, answers the (decrypted)
// request and protects the answer, errors included (RFC 8613 §8.3: only
// the failures of §8.2 go back unprotected).
func (n *Node) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	n.requests.Add(1)
	group := n.recent.has(r.Peer, r.Msg.MID)
	if group {
		n.groupReqs.Add(1)
		raw, _ := r.Msg.Marshal()
		n.mu.Lock()
		n.lastGroup = raw
		n.mu.Unlock()
		// RFC 7252 §8.2: not at once, but after a random part of the
		// Leisure, so that the members' answers spread out.
		if l := n.cfg.Leisure; l > 0 {
			t := time.NewTimer(rand.N(l))
			select {
			case <-t.C:
			case <-n.stop:
				t.Stop()
				return nil
			case <-ctx.Done():
				t.Stop()
				return nil
			}
		}
	}
	drop := suppressed(r.Msg, group)
	if drop == 0 {
		return n.serveOne(ctx, w, r)
	}
	var qw coap.ResponseWriter = quietWriter{w, drop}
	if nw, ok := w.(coap.NotifyWriter); ok {
		qw = quietNotifyWriter{nw, drop}
	}
	if err := n.serveOne(ctx, qw, r); err != nil {
		// Through the filter, not the endpoint: an error may be one the
		// client does not want.
		return qw.WriteResponse(errorResponse(err))
	}
	return nil
}

// No-Response values (RFC 7967 §2.1): the classes a client is not
// interested in.
const (
	noResponse2xx = 2
	noResponse4xx = 8
	noResponse5xx = 16
)

// suppressed is the No-Response bitmap of the classes of response the
// node does not send to r: what the client's No-Response option asks
// (RFC 7967); without one, for a group request, errors, which
// draft-ietf-core-groupcomm-bis §3.1.2 says a server should not send.
func suppressed(m *coap.Message, group bool) uint32 {
	if v, ok := m.Options.Uint(coap.NoResponse); ok {
		return v
	}
	if group {
		return noResponse4xx | noResponse5xx
	}
	return 0
}

// suppress reports whether a response of code c is one of drop's classes.
func suppress(drop uint32, c coap.Code) bool {
	switch c.Class() {
	case 2:
		return drop&noResponse2xx != 0
	case 4:
		return drop&noResponse4xx != 0
	case 5:
		return drop&noResponse5xx != 0
	}
	return false
}

// quietWriter leaves out the responses the client asked not to get.
type quietWriter struct {
	coap.ResponseWriter
	drop uint32
}

func (q quietWriter) WriteResponse(resp *coap.Message) error {
	if suppress(q.drop, resp.Code) {
		return nil
	}
	return q.ResponseWriter.WriteResponse(resp)
}

// quietNotifyWriter is quietWriter for a writer that may take
// notifications (an observation made by a group request).
type quietNotifyWriter struct {
	coap.NotifyWriter
	drop uint32
}

func (q quietNotifyWriter) WriteResponse(resp *coap.Message) error {
	if suppress(q.drop, resp.Code) {
		return nil
	}
	return q.NotifyWriter.WriteResponse(resp)
}

// serveOne answers a request, group or not.
func (n *Node) serveOne(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	if !r.Msg.Options.Has(coap.OSCORE) {
		resp, err := n.answer(w, r, r.Msg, nil)
		if err != nil {
			return err
		}
		return w.WriteResponse(resp)
	}
	if n.cfg.OSCORE == nil {
		// OSCORE is a critical option this node does not know (RFC 7252
		// §5.4.1).
		return coap.Errorf(coap.BadOption, "no OSCORE here")
	}
	req, ex, errResp, err := n.cfg.OSCORE.UnprotectRequest(r.Msg)
	if err != nil {
		if errResp != nil {
			return w.WriteResponse(errResp)
		}
		return coap.Errorf(coap.BadRequest, "")
	}
	resp, err := n.answer(w, r, req, ex)
	if err != nil {
		resp = errorResponse(err)
	}
	p, err := ex.ProtectResponse(resp)
	if err != nil {
		if nw, ok := w.(coap.NotifyWriter); ok {
			n.dropObserver(nw)
		}
		return coap.Errorf(coap.InternalServerError, "")
	}
	return w.WriteResponse(p)
}

// errorResponse is the message the endpoint would make of a handler's
// error, for protecting it.
func errorResponse(err error) *coap.Message {
	var e *coap.Error
	if !errors.As(err, &e) {
		return &coap.Message{Code: coap.InternalServerError}
	}
	m := &coap.Message{Code: e.Code, Payload: []byte(e.Diagnostic)}
	if e.MaxAge >= 0 {
		m.Options = m.Options.SetUint(coap.MaxAge, uint32(e.MaxAge))
	}
	return m
}

// answer serves req, which arrived as r (decrypted, if ex is set: then r.Msg
// is the OSCORE message), and returns the unprotected response.
func (n *Node) answer(w coap.ResponseWriter, r *coap.Request, req *coap.Message, ex Exchange) (*coap.Message, error) {
	var path string
	for v := range req.Options.All(coap.URIPath) {
		path += "/" + string(v)
	}
	resp := &coap.Message{Code: coap.Content}
	switch path {
	case "/.well-known/core":
		if req.Code != coap.GET {
			return nil, coap.Errorf(coap.MethodNotAllowed, "")
		}
		resp.Options = resp.Options.SetUint(coap.ContentFormat, 40)
		resp.Payload = slices.Clone(n.core)
	case pathTemp, pathOSCORETemp, pathSignedTemp:
		switch {
		case path == pathOSCORETemp && n.cfg.OSCORE == nil, path == pathSignedTemp && n.cfg.Signer == nil:
			return nil, coap.Errorf(coap.NotFound, "")
		case path == pathOSCORETemp && ex == nil:
			return nil, coap.Errorf(coap.Unauthorized, "OSCORE required")
		case req.Code != coap.GET:
			return nil, coap.Errorf(coap.MethodNotAllowed, "")
		}
		resp, step, err := n.reading(path)
		if err != nil {
			return nil, err
		}
		if obs, ok := req.Options.Uint(coap.Observe); ok {
			n.observe(w, r, path, ex, obs, resp, step)
		}
		return resp, nil
	case "/actuators/valve":
		n.mu.Lock()
		defer n.mu.Unlock()
		switch req.Code {
		case coap.GET:
			resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
			resp.Payload = []byte(n.valve)
		case coap.PUT:
			v := string(req.Payload)
			if v != "open" && v != "closed" {
				return nil, coap.Errorf(coap.BadRequest, "want open or closed")
			}
			n.valve = v
			resp.Code = coap.Changed
		default:
			return nil, coap.Errorf(coap.MethodNotAllowed, "")
		}
	case "/echo":
		switch req.Code {
		case coap.POST, coap.PUT:
			resp.Code = coap.Changed
		case coap.DELETE:
			resp.Code = coap.Deleted
		}
		if cf, ok := req.Options.Get(coap.ContentFormat); ok {
			resp.Options = resp.Options.Set(coap.ContentFormat, cf)
		}
		resp.Payload = slices.Clone(req.Payload)
	default:
		return nil, coap.Errorf(coap.NotFound, "")
	}
	return resp, nil
}

// observe registers (obs 0) or removes (obs 1) an observation of the
// resource at path (RFC 7641 §3.1, §3.6). A registration replaces one of
// the same client and token; resp, the first response, then gets the
// Observe option.
func (n *Node) observe(w coap.ResponseWriter, r *coap.Request, path string, ex Exchange, obs uint32, resp *coap.Message, step int) {
	nw, can := w.(coap.NotifyWriter)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.observers = slices.DeleteFunc(n.observers, func(o observer) bool {
		return o.w.Peer() == r.Peer && string(o.w.Token()) == string(r.Msg.Token)
	})
	if obs == 0 && can && len(n.observers) < maxNodeObservers {
		n.observers = append(n.observers, observer{w: nw, res: path, ex: ex})
		resp.Options = resp.Options.SetUint(coap.Observe, uint32(step)&0xffffff)
	}
}

// reading is the response of the reading resource at path now, and the
// step of the reading.
func (n *Node) reading(path string) (*coap.Message, int, error) {
	if path != pathSignedTemp {
		step, resp := n.tempResponse()
		return resp, step, nil
	}
	step, v, left := n.temp()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.signRep == nil || n.signStep != step {
		// Signed once per reading: every GET and notification of the
		// same reading carries the same representation, as a node that
		// cannot afford a signature per request would do.
		rep, err := n.cfg.Signer.Sign(n.signedURI, 0, []byte(v))
		if err != nil {
			return nil, 0, coap.Errorf(coap.InternalServerError, "")
		}
		n.signRep, n.signStep = rep, step
	}
	resp := &coap.Message{Code: coap.Content, Payload: slices.Clone(n.signRep)}
	resp.Options = resp.Options.SetUint(coap.ContentFormat, cfCOSESign1)
	resp.Options = resp.Options.SetUint(coap.MaxAge, uint32((left+time.Second-1)/time.Second))
	return resp, step, nil
}

// stationLink is a radio.Link over a Station: Send transmits on the
// medium; frames the medium delivers to this station's addresses wait in
// a bounded queue for Recv.
type stationLink struct {
	st         Station
	ext, short mac.Addr
	pan        uint16
	rx         chan radio.Frame
	done       chan struct{}
	once       sync.Once
	drops      atomic.Uint64
}

var _ radio.Link = (*stationLink)(nil)

// receive is the station's Receiver: it filters by PAN and address as a
// radio's hardware filter does and acknowledges unicast frames to us.
func (l *stationLink) receive(f radio.Frame) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	mf, err := mac.Decode(f.Data)
	if err != nil || mf.Type != mac.TypeData {
		return false
	}
	// A version 2 frame without a destination PAN ID is for our own PAN
	// (802.15.4-2015 §7.2.1.5, Table 7-2).
	if mf.HasDstPAN() && mf.DstPAN != l.pan && mf.DstPAN != mac.BroadcastShort {
		return false
	}
	bcast := mf.Dst.IsBroadcast()
	if !bcast && mf.Dst != l.ext && (!l.short.IsValid() || mf.Dst != l.short) {
		return false
	}
	f.Data = slices.Clone(f.Data) // the medium's buffer is not ours to keep
	select {
	case l.rx <- f:
	default:
		l.drops.Add(1)
	}
	return !bcast
}

func (l *stationLink) Send(ctx context.Context, mpdu []byte) error {
	if len(mpdu) > mac.MaxMPDU {
		return radio.ErrTooLong
	}
	select {
	case <-l.done:
		return radio.ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.st.Transmit(mpdu); err != nil {
		return fmt.Errorf("sim: node %v: %w", l.ext, err)
	}
	return nil
}

func (l *stationLink) Recv(ctx context.Context) (radio.Frame, error) {
	select {
	case <-l.done:
		return radio.Frame{}, radio.ErrClosed
	case <-ctx.Done():
		return radio.Frame{}, ctx.Err()
	case f := <-l.rx:
		return f, nil
	}
}

func (l *stationLink) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.st.Leave()
	})
	return nil
}

// Reading is the node's temperature now, as /sensors/temp serves it.
func (n *Node) Reading() string {
	_, v, _ := n.temp()
	return v
}

// SignedURI is the resource URI the node's /signed/temp representations
// are bound to: coap://[addr]/signed/temp.
func (n *Node) SignedURI() string { return n.signedURI }

// SignReading signs the reading now (Content-Format 0) for the resource
// uri, for a node that publishes its readings somewhere else, such as a
// pub-sub topic. The counter is the one /signed/temp uses. ErrNoSigner
// without a Signer.
func (n *Node) SignReading(uri string) ([]byte, error) {
	if n.cfg.Signer == nil {
		return nil, ErrNoSigner
	}
	rep, err := n.cfg.Signer.Sign(uri, 0, []byte(n.Reading()))
	if err != nil {
		return nil, fmt.Errorf("sim: node %v: %w", n.cfg.ExtAddr, err)
	}
	return rep, nil
}

// recentGroup remembers which datagrams lately read were group requests,
// by sender and message ID, for the handler, which sees only the message
// (the endpoint does not tell a datagram's destination). A small ring: a
// group request is served soon after it is read.
type recentGroup struct {
	mu   sync.Mutex
	keys [64]groupKey // guarded by mu
	next int          // guarded by mu
}

type groupKey struct {
	from netip.AddrPort
	mid  uint16
	set  bool
}

func (g *recentGroup) add(from netip.AddrPort, mid uint16) {
	g.mu.Lock()
	g.keys[g.next] = groupKey{from, mid, true}
	g.next = (g.next + 1) % len(g.keys)
	g.mu.Unlock()
}

func (g *recentGroup) has(from netip.AddrPort, mid uint16) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.keys[:], groupKey{from, mid, true})
}

// groupConn is the node's transport: its Conn, noting the group requests
// it reads.
type groupConn struct {
	*radio.Conn
	n *Node
}

func (c groupConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, to, err := c.Conn.ReadMsg(b)
	// A request's message ID is in octets 2-3 (RFC 7252 §3); the type
	// bits say request-or-not only with the code, which the handler
	// sees: noting any multicast datagram is enough.
	if err == nil && to.IsMulticast() && n >= 4 {
		c.n.recent.add(from, uint16(b[2])<<8|uint16(b[3]))
	}
	return n, from, err
}
