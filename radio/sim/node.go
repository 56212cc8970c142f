package sim

import (
	"context"
	"fmt"
	"log/slog"
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
}

// Node is a simulated constrained device: a station on a Medium with its
// own MAC address, a radio.Conn over it and a CoAP server with
// /sensors/temp (GET), /actuators/valve (GET, PUT "open" or "closed"),
// /echo (any method, payload and Content-Format back) and
// /.well-known/core.
type Node struct {
	cfg      NodeConfig
	link     *stationLink
	conn     *radio.Conn
	ep       *coap.Endpoint
	start    time.Time
	requests atomic.Uint64
	once     sync.Once

	mu        sync.Mutex
	valve     string              // guarded by mu
	observers []coap.NotifyWriter // guarded by mu: observers of /sensors/temp
	stop      chan struct{}
	wg        sync.WaitGroup
}

// maxNodeObservers bounds a node's observers, as a constrained device's
// memory would.
const maxNodeObservers = 4

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
	n.link.st = m.Join(n.link.receive)
	conn, err := radio.NewConn(n.link, radio.ConnConfig{
		Prefix: cfg.Prefix, PANID: cfg.PANID, ExtAddr: cfg.ExtAddr, ShortAddr: cfg.ShortAddr,
	})
	if err != nil {
		n.link.Close()
		return nil, fmt.Errorf("sim: node %v: %w", cfg.ExtAddr, err)
	}
	n.conn = conn
	var h coap.Handler = coap.HandlerFunc(n.serve)
	if cfg.Handler != nil {
		h = coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
			n.requests.Add(1)
			return cfg.Handler.ServeCoAP(ctx, w, r)
		})
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n.ep = coap.NewEndpoint(conn, coap.EndpointConfig{
		Handler: h, Params: cfg.Params,
		Logger: log.With("component", "sim-node", "addr", n.Addr()),
	})
	n.wg.Add(1)
	go n.notifyLoop()
	return n, nil
}

// notifyLoop sends a notification to every observer of /sensors/temp each
// time the reading changes (RFC 7641 §4.2), CON every fifth so that a gone
// observer is noticed (§4.5).
func (n *Node) notifyLoop() {
	defer n.wg.Done()
	for {
		step, _, left := n.temp()
		select {
		case <-n.stop:
			return
		case <-time.After(left + time.Millisecond):
		}
		n.mu.Lock()
		obs := slices.Clone(n.observers)
		n.mu.Unlock()
		for _, w := range obs {
			resp := n.tempResponse()
			resp.Options = resp.Options.SetUint(coap.Observe, uint32(step+1)&0xffffff)
			w.Notify(resp, (step+1)%5 == 0, func(err error) {
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
	n.observers = slices.DeleteFunc(n.observers, func(o coap.NotifyWriter) bool { return o == w })
}

// Observers is how many observers /sensors/temp has.
func (n *Node) Observers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.observers)
}

func (n *Node) tempResponse() *coap.Message {
	step, v, left := n.temp()
	resp := &coap.Message{Code: coap.Content, Payload: []byte(v)}
	resp.Options = resp.Options.Insert(coap.ETag, []byte(strconv.Itoa(step%40)))
	resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
	resp.Options = resp.Options.SetUint(coap.MaxAge, uint32((left+time.Second-1)/time.Second))
	return resp
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

const wellKnownCore = `</sensors/temp>;rt="temperature-c";ct=0;obs,</actuators/valve>;rt="valve";ct=0,</echo>`

func (n *Node) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	n.requests.Add(1)
	var path string
	for v := range r.Msg.Options.All(coap.URIPath) {
		path += "/" + string(v)
	}
	resp := &coap.Message{Code: coap.Content}
	switch path {
	case "/.well-known/core":
		if r.Msg.Code != coap.GET {
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
		resp.Options = resp.Options.SetUint(coap.ContentFormat, 40)
		resp.Payload = []byte(wellKnownCore)
	case "/sensors/temp":
		if r.Msg.Code != coap.GET {
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
		resp = n.tempResponse()
		if obs, ok := r.Msg.Options.Uint(coap.Observe); ok {
			nw, can := w.(coap.NotifyWriter)
			n.mu.Lock()
			switch {
			case obs == 0 && can && len(n.observers) < maxNodeObservers:
				n.observers = append(n.observers, nw)
				step, _, _ := n.temp()
				resp.Options = resp.Options.SetUint(coap.Observe, uint32(step)&0xffffff)
			case obs == 1:
				n.observers = slices.DeleteFunc(n.observers, func(o coap.NotifyWriter) bool {
					return o.Peer() == r.Peer && string(o.Token()) == string(r.Msg.Token)
				})
			}
			n.mu.Unlock()
		}
	case "/actuators/valve":
		n.mu.Lock()
		defer n.mu.Unlock()
		switch r.Msg.Code {
		case coap.GET:
			resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
			resp.Payload = []byte(n.valve)
		case coap.PUT:
			v := string(r.Msg.Payload)
			if v != "open" && v != "closed" {
				return coap.Errorf(coap.BadRequest, "want open or closed")
			}
			n.valve = v
			resp.Code = coap.Changed
		default:
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
	case "/echo":
		switch r.Msg.Code {
		case coap.POST, coap.PUT:
			resp.Code = coap.Changed
		case coap.DELETE:
			resp.Code = coap.Deleted
		}
		if cf, ok := r.Msg.Options.Get(coap.ContentFormat); ok {
			resp.Options = resp.Options.Set(coap.ContentFormat, cf)
		}
		resp.Payload = slices.Clone(r.Msg.Payload)
	default:
		return coap.Errorf(coap.NotFound, "")
	}
	return w.WriteResponse(resp)
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
	if mf.DstPAN != l.pan && mf.DstPAN != mac.BroadcastShort {
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
