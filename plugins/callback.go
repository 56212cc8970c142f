package plugins

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// hostServer is the Host service a plugin's front end calls: Do runs a
// request through the chain as a request from the plugin's synthetic peer,
// Observe makes that peer one more observer in the chain's Observe hub.
type hostServer struct {
	pb.UnimplementedHostServer
	p    *plug
	life context.Context // the plugin instance's: ends when it stops
}

func (s *hostServer) Do(ctx context.Context, req *pb.DoRequest) (resp *pb.DoResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.p.log.Error("panic in host callback", "panic", r)
			resp, err = nil, status.Error(codes.Internal, "panic in chain")
		}
	}()
	s.p.callbacks.Add(1)
	m, err := wire.Decode(req.GetMessage())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !m.Code.IsRequest() {
		return nil, status.Errorf(codes.InvalidArgument, "code %v is no request", m.Code)
	}
	if s.p.h.chain == nil {
		return s.answer(m, coap.Errorf(coap.ServiceUnavailable, "no chain"))
	}
	// A body or representation larger than a block moves in RFC 7959
	// blocks, each its own request through the chain; the plugin gets
	// the whole or an error, never a part.
	exchanges := 0
	r, err := s.blocks(req.GetSecure(), &exchanges).Do(ctx, m)
	if exchanges > 1 {
		s.p.blockwise.Add(1)
	}
	switch {
	case errors.Is(err, errPanic):
		return nil, status.Error(codes.Internal, "panic in chain")
	case errors.Is(err, errUnanswered) && exchanges == 1:
		return &pb.DoResponse{}, nil // deliberately unanswered
	case err != nil:
		if f := s.transferFailure(m, err); f != nil {
			return &pb.DoResponse{Failure: f}, nil
		}
		return s.answer(m, err)
	}
	b, err := wire.Encode(r)
	if err != nil {
		return &pb.DoResponse{Failure: wire.Failure(err)}, nil
	}
	return &pb.DoResponse{Message: b}, nil
}

// errUnanswered is what a chain exchange that got no response reports.
var errUnanswered = errors.New("plugins: no response")

// exchange runs m through the chain once, as a request from the plugin's
// peer, and returns the response, with m's token and message ID.
func (s *hostServer) exchange(ctx context.Context, m *coap.Message, secure bool) (*coap.Message, error) {
	w := newCapture(m)
	err := s.serve(ctx, w, &coap.Request{Msg: m, Peer: s.p.peer, Secure: secure})
	if errors.Is(err, coap.ErrLater) {
		// Answered later (the stage contract): this goroutine may wait.
		select {
		case <-w.ended:
			err = w.ferr
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if r := w.response(); r != nil {
		return r, nil
	}
	if err == nil {
		err = errUnanswered
	}
	return nil, err
}

// blocks is the block-wise client (RFC 7959) of one callback over the
// chain, bounded by the plugin's max_body; exchanges counts its requests.
// A transfer's exchanges run one after another, so the count needs no
// lock.
func (s *hostServer) blocks(secure bool, exchanges *int) *blockwise.Client {
	return &blockwise.Client{
		MaxBody:   s.p.cfg.MaxBody,
		BlockSize: s.p.cfg.BlockSize,
		RoundTrip: func(ctx context.Context, m *coap.Message) (*coap.Message, error) {
			*exchanges++
			return s.exchange(ctx, m, secure)
		},
	}
}

// transferFailure is the Failure a plugin gets for a block-wise transfer
// that could not give it a whole body: 4.13 for a request body over its
// max_body (RFC 7252 §5.9.2.9), 5.02 for a representation over it or one
// whose blocks did not make a whole (RFC 7252 §5.9.3.3). nil for other
// errors. A body over max_body is counted and logged with its URI.
func (s *hostServer) transferFailure(req *coap.Message, err error) *pb.Failure {
	var tl *blockwise.TooLargeError
	switch {
	case errors.As(err, &tl):
		s.p.tooLarge.Add(1)
		what, code := "representation", coap.BadGateway
		if tl.Request {
			what, code = "request body", coap.RequestEntityTooLarge
		}
		if s.p.warns.pass(s.p.log) {
			s.p.log.Warn(what+" over max_body: refused whole", "uri", targetOf(req), "size", tl.Size, "max_body", tl.Max)
		}
		return wire.Failure(&coap.Error{Code: code, MaxAge: -1, Err: tl,
			Diagnostic: fmt.Sprintf("%s of %d bytes over the gateway's max_body of %d", what, tl.Size, tl.Max)})
	case errors.Is(err, blockwise.ErrBlockwise), errors.Is(err, errUnanswered):
		if s.p.warns.pass(s.p.log) {
			s.p.log.Warn("block-wise transfer failed", "uri", targetOf(req), "err", err)
		}
		return wire.Failure(&coap.Error{Code: coap.BadGateway, MaxAge: -1, Err: err, Diagnostic: "incomplete block-wise transfer"})
	}
	return nil
}

// targetOf is the URI a request from a plugin names, for logs: its
// Proxy-Uri, or what its Proxy-Scheme and Uri-* options compose.
func targetOf(m *coap.Message) string {
	if pu, ok := m.Options.Get(coap.ProxyURI); ok {
		return string(pu)
	}
	scheme := "coap"
	if ps, ok := m.Options.Get(coap.ProxyScheme); ok {
		scheme = string(ps)
	}
	return coap.URIFromOptions(m.Options, scheme, "", coap.DefaultPort(scheme)).String()
}

// answer turns a chain error into the response an endpoint would send.
func (s *hostServer) answer(req *coap.Message, err error) (*pb.DoResponse, error) {
	var ce *coap.Error
	if !errors.As(err, &ce) {
		ce = &coap.Error{Code: coap.InternalServerError, MaxAge: -1}
	}
	r := ce.Response()
	r.Token, r.MID, r.Type = req.Token, req.MID, responseType(req)
	b, err := wire.Encode(r)
	if err != nil {
		return &pb.DoResponse{Failure: wire.Failure(err)}, nil
	}
	return &pb.DoResponse{Message: b}, nil
}

func responseType(req *coap.Message) coap.Type {
	if req.Type == coap.Confirmable {
		return coap.Acknowledgement
	}
	return coap.NonConfirmable
}

// capture is the ResponseWriter of a Host.Do request: it keeps the first
// response, as an endpoint would send it, and learns the end of one
// answered later (coap.Finisher).
type capture struct {
	req  *coap.Message
	mu   sync.Mutex
	resp *coap.Message // guarded by mu

	endOnce sync.Once
	ended   chan struct{} // closed by Finish
	ferr    error         // Finish's error, set before ended closes
}

var _ coap.Finisher = (*capture)(nil)

func newCapture(req *coap.Message) *capture {
	return &capture{req: req, ended: make(chan struct{})}
}

// Finish ends a request the chain answered later.
func (c *capture) Finish(err error) {
	c.endOnce.Do(func() {
		c.ferr = err
		close(c.ended)
	})
}

func (c *capture) WriteResponse(m *coap.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resp != nil {
		return coap.ErrAnswered
	}
	r := m.Clone()
	r.Token, r.MID, r.Type = c.req.Token, c.req.MID, responseType(c.req)
	c.resp = r
	return nil
}

func (c *capture) response() *coap.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resp
}

// deregisterTimeout bounds the request that removes a plugin's observer
// from the chain once its stream has ended.
const deregisterTimeout = 5 * time.Second

var errPanic = errors.New("plugins: panic in chain")

// serve runs r through the chain, a panic turned into errPanic.
func (s *hostServer) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.p.log.Error("panic in host callback", "panic", v)
			err = errPanic
		}
	}()
	return s.p.h.chain.ServeCoAP(ctx, w, r)
}

// Observe registers the plugin as an observer (RFC 7641) through the chain
// Do uses: the plugin's GET or FETCH with Observe=0 and a token of its
// own, from the plugin's peer, with an observeWriter for a ResponseWriter,
// so that the Observe hub counts the plugin as one more observer of the
// resource's one upstream observation (§5). The first response and every
// notification go to the stream; when the stream ends, the observer is
// deregistered as a client would do it, with Observe=1 and the same token
// (§3.6).
func (s *hostServer) Observe(req *pb.DoRequest, stream pb.Host_ObserveServer) error {
	s.p.observes.Add(1)
	m, err := wire.Decode(req.GetMessage())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if !m.Code.IsSafe() {
		return status.Errorf(codes.InvalidArgument, "code %v cannot observe", m.Code)
	}
	if s.p.h.chain == nil {
		return stream.Send(notification(s.answer(m, coap.Errorf(coap.ServiceUnavailable, "no chain"))))
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if s.life != nil {
		defer context.AfterFunc(s.life, cancel)()
	}

	reg := m.Clone()
	reg.Token = binary.BigEndian.AppendUint64(nil, rand.Uint64())
	reg.Options = reg.Options.SetUint(coap.Observe, 0)
	r := &coap.Request{Msg: reg, Peer: s.p.peer, Secure: req.GetSecure()}
	w := newObserveWriter(m, r, &s.p.observeSkipped)
	observing := false
	defer func() {
		w.close()
		if observing {
			s.deregister(ctx, r)
		}
	}()

	err = s.serve(ctx, w, r)
	first, _ := w.take()
	if first == nil {
		if errors.Is(err, errPanic) {
			return status.Error(codes.Internal, "panic in chain")
		}
		if err != nil {
			return stream.Send(notification(s.answer(m, err)))
		}
		return stream.Send(&pb.Notification{}) // deliberately unanswered
	}
	// Whatever the stream does now, an observer made by this response
	// is removed when the handler returns.
	observing = observes(first)
	whole, err := s.whole(ctx, reg, first, req.GetSecure())
	if err != nil {
		return s.endWith(stream, m, err)
	}
	// A whole that is not 2.xx (a block's fetch failed) ends the stream
	// too; the observer the hub keeps is deregistered on the way out.
	if err := s.send(stream, whole); err != nil || !observing || !observes(whole) {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.ready:
		}
		last, done := w.take()
		if last == nil {
			continue
		}
		// RFC 7959 §2.6: a notification carries the first block; the
		// rest is fetched before the plugin sees it, whole.
		n, err := s.whole(ctx, reg, last, req.GetSecure())
		if err != nil {
			if done != nil {
				done(nil)
			}
			return s.endWith(stream, m, err)
		}
		err = s.send(stream, n)
		if done != nil {
			// A CON notification counts as acknowledged once the stream
			// has taken it; the hub holds newer states until then.
			if err != nil {
				done(coap.ErrReset)
			} else {
				done(nil)
			}
		}
		if err != nil {
			return err
		}
		if !observes(last) {
			// The last notification (§3.2): the hub removes the
			// observer itself.
			observing = false
			return nil
		}
		if !observes(n) {
			return nil // a block's fetch failed: deregistered on the way out
		}
	}
}

// observes reports whether m keeps an observation going: a 2.xx with
// Observe (RFC 7641 §3.2, §4.1).
func observes(m *coap.Message) bool {
	return m.Code.Class() == 2 && m.Options.Has(coap.Observe)
}

// whole completes a response or notification n of the registration reg
// that carries the first block of its representation (RFC 7959 §2.6):
// the other blocks are fetched through the chain with GET and Block2,
// without Observe (§3.4). n itself when it is whole already.
func (s *hostServer) whole(ctx context.Context, reg, n *coap.Message, secure bool) (*coap.Message, error) {
	if b, ok, err := blockwise.Get(n.Options, coap.Block2); err == nil && (!ok || !b.More) {
		return n, nil
	}
	// Not the observation's token: the fetches are requests of their own
	// (RFC 7959 §3.4, Figure 12).
	follow := reg.Clone()
	follow.Token = binary.BigEndian.AppendUint64(nil, rand.Uint64())
	exchanges := 0
	w, err := s.blocks(secure, &exchanges).Complete(ctx, follow, n)
	if exchanges > 0 {
		s.p.blockwise.Add(1)
	}
	if err != nil {
		return nil, err
	}
	// The whole goes to the plugin as n would have: its token, its type,
	// its message ID.
	w.Token, w.MID, w.Type = n.Token, n.MID, n.Type
	return w, nil
}

// endWith ends a plugin's observation with the reason its latest message
// could not be completed: a representation over max_body, blocks that did
// not make a whole, an error of the chain. The plugin gets a Failure,
// never a part; its observer is then deregistered (§3.6).
func (s *hostServer) endWith(stream pb.Host_ObserveServer, req *coap.Message, err error) error {
	if errors.Is(err, errPanic) {
		return status.Error(codes.Internal, "panic in chain")
	}
	if stream.Context().Err() != nil {
		return nil
	}
	f := s.transferFailure(req, err)
	if f == nil {
		var ce *coap.Error
		if !errors.As(err, &ce) {
			ce = &coap.Error{Code: coap.BadGateway, MaxAge: -1, Diagnostic: "fetching the representation's blocks", Err: err}
		}
		f = wire.Failure(ce)
	}
	return stream.Send(&pb.Notification{Failure: f})
}

func notification(r *pb.DoResponse, _ error) *pb.Notification {
	return &pb.Notification{Message: r.GetMessage(), Failure: r.GetFailure()}
}

func (s *hostServer) send(stream pb.Host_ObserveServer, m *coap.Message) error {
	b, err := wire.Encode(m)
	if err != nil {
		_ = stream.Send(&pb.Notification{Failure: wire.Failure(fmt.Errorf("plugins: observe: %w", err))})
		return err
	}
	return stream.Send(&pb.Notification{Message: b})
}

// deregister removes the plugin's observer the way a client does (RFC
// 7641 §3.6): the registration again, with Observe=1. The hub removes the
// observer (and, with the last one, cancels the upstream observation); the
// GET then goes on like any other, and its response is dropped. It runs
// when the plugin's stream has ended, so its own context outlives the
// stream's, bounded by deregisterTimeout.
func (s *hostServer) deregister(ctx context.Context, r *coap.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
	defer cancel()
	m := r.Msg.Clone()
	m.Options = m.Options.SetUint(coap.Observe, 1)
	if err := s.serve(ctx, newCapture(m), &coap.Request{Msg: m, Peer: r.Peer, Secure: r.Secure}); err != nil {
		s.p.log.Debug("observe deregistration", "err", err)
	}
}

// errObserverGone is what Notify returns once the plugin's stream has
// ended: the hub then removes the observer, if deregistration has not.
var errObserverGone = errors.New("plugins: observer gone")

// observeWriter is the coap.NotifyWriter of a plugin's observation, kept by
// the Observe hub like any client's. It never blocks the hub: it holds the
// first response and the latest notification the stream has not taken
// yet. A newer notification replaces an older one that was not taken
// (RFC 7641 §4.5 lets an observer skip intermediate states), counted in
// skipped, so a plugin that reads slowly costs one message at most here
// (and gRPC's flow-control window).
type observeWriter struct {
	req     *coap.Message // the plugin's request: what it gets carries its token
	peer    netip.AddrPort
	token   []byte // the registration's token in the chain
	skipped *atomic.Uint64
	ready   chan struct{} // capacity 1: a notification waits to be taken

	mu     sync.Mutex
	wrote  bool          // guarded by mu: the first response was written
	first  *coap.Message // guarded by mu: the first response, until taken
	next   *coap.Message // guarded by mu: the latest notification not taken
	done   func(error)   // guarded by mu: next's outcome callback, for a CON
	mid    uint16        // guarded by mu: the last notification's message ID
	closed bool          // guarded by mu
}

var _ coap.NotifyWriter = (*observeWriter)(nil)

func newObserveWriter(req *coap.Message, r *coap.Request, skipped *atomic.Uint64) *observeWriter {
	return &observeWriter{req: req, peer: r.Peer, token: r.Msg.Token, skipped: skipped, ready: make(chan struct{}, 1), mid: req.MID}
}

func (w *observeWriter) Peer() netip.AddrPort { return w.peer }
func (w *observeWriter) Token() []byte        { return w.token }

func (w *observeWriter) WriteResponse(m *coap.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wrote {
		return coap.ErrAnswered
	}
	w.wrote = true
	r := m.Clone()
	r.Token, r.MID, r.Type = w.req.Token, w.req.MID, responseType(w.req)
	w.first = r
	return nil
}

// Notify keeps resp (a copy: the hub reuses its memory) as the latest
// state for the stream to take; done, for a CON, is called when the
// stream has taken it.
func (w *observeWriter) Notify(resp *coap.Message, con bool, done func(error)) error {
	n := resp.Clone()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errObserverGone
	}
	w.mid++
	n.Token, n.MID, n.Type = w.req.Token, w.mid, coap.NonConfirmable
	old := w.done
	if w.next != nil {
		w.skipped.Add(1)
	}
	w.next, w.done = n, nil
	if con {
		w.done = done
	}
	w.mu.Unlock()
	if old != nil {
		// The hub sends no notification while a CON is outstanding; if
		// one came anyway, the replaced CON is settled, not leaked.
		old(nil)
	}
	select {
	case w.ready <- struct{}{}:
	default:
	}
	return nil
}

// take returns the first response, once it was written, and then the
// latest notification, each once; nil when there is nothing new.
func (w *observeWriter) take() (*coap.Message, func(error)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first != nil {
		m := w.first
		w.first = nil
		return m, nil
	}
	if !w.wrote || w.next == nil {
		return nil, nil
	}
	m, done := w.next, w.done
	w.next, w.done = nil, nil
	return m, done
}

// close ends the writer: later notifications fail, which makes the hub
// drop the observer, and a CON waiting to be taken is rejected.
func (w *observeWriter) close() {
	w.mu.Lock()
	w.closed = true
	done := w.done
	w.next, w.done = nil, nil
	w.mu.Unlock()
	if done != nil {
		done(coap.ErrReset)
	}
}

// ObserveLimit is the bound on observations (Config.MaxObservations) for
// a, when a is the address a plugin's front end calls from, for the
// Observe hub's WithClientLimit.
func (h *Host) ObserveLimit(a netip.Addr) (int, bool) {
	if h == nil {
		return 0, false
	}
	for _, p := range h.plugins {
		if p.peer.Addr() == a {
			return p.cfg.MaxObservations, true
		}
	}
	return 0, false
}
