package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// Serve runs the plugin until gatewayd stops it, then closes the parts that
// are io.Closers. A plugin's main calls it and nothing else of note:
//
//	func main() { sdk.Serve(sdk.ServeOpts{Init: newPlugin}) }
//
// Run by hand instead of by gatewayd, it says so and exits with status 1;
// run with the one argument -version, it prints its name and Version.
func Serve(opts ServeOpts) {
	if len(os.Args) == 2 && (os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println(filepath.Base(os.Args[0]), Version())
		os.Exit(0)
	}
	if opts.Init == nil {
		fmt.Fprintln(os.Stderr, "sdk: ServeOpts.Init is required")
		os.Exit(1)
	}
	st := &state{init: opts.Init}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &grpcPlugin{st: st}},
		GRPCServer:      NewGRPCServer,
	})
	st.close()
}

// version is set at build time:
// -ldflags "-X github.com/opaque-edge/gatewayd/plugins/sdk.version=1.2.3".
var version = ""

// Version is the plugin's version: the one set at build time, else the
// main module's, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// NewGRPCServer is a gRPC server that turns a panic in a handler into an
// Internal error instead of a crash, and takes messages as large as the
// CoAP messages the plugin protocol carries (wire.MaxMessage, a whole
// representation). Both ends use it.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.MaxRecvMsgSize(wire.MaxMessage+16<<10),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer recoverTo(&err, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer recoverTo(&err, info.FullMethod)
			return h(srv, ss)
		}),
	)
	return grpc.NewServer(opts...)
}

func recoverTo(err *error, method string) {
	if r := recover(); r != nil {
		fmt.Fprintf(os.Stderr, "sdk: panic in %s: %v\n%s", method, r, debug.Stack())
		*err = status.Errorf(codes.Internal, "panic in %s: %v", method, r)
	}
}

// grpcPlugin is the plugin end of the go-plugin plugin.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	st *state
}

func (p *grpcPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	p.st.broker = broker
	pb.RegisterPluginServer(s, &pluginServer{st: p.st})
	pb.RegisterTranslatorServer(s, &translatorServer{st: p.st})
	pb.RegisterFrontEndServer(s, &frontEndServer{st: p.st})
	pb.RegisterRadioServer(s, &radioServer{st: p.st})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the plugin end has no client")
}

// state is the plugin's parts, once Init has built them.
type state struct {
	init   InitFunc
	broker *plugin.GRPCBroker

	mu     sync.Mutex
	parts  *Plugin // guarded by mu; nil before Init
	closed bool    // guarded by mu
}

func (st *state) get() (*Plugin, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.parts == nil {
		return nil, status.Error(codes.FailedPrecondition, "plugin not initialized")
	}
	return st.parts, nil
}

func (st *state) close() {
	st.mu.Lock()
	p := st.parts
	st.closed = true
	st.mu.Unlock()
	if p == nil {
		return
	}
	seen := map[any]bool{}
	for _, part := range []any{p.Translator, p.FrontEnd, p.Radio} {
		if c, ok := part.(io.Closer); ok && !seen[part] {
			seen[part] = true
			_ = c.Close()
		}
	}
}

type pluginServer struct {
	pb.UnimplementedPluginServer
	st *state
}

func (s *pluginServer) Init(ctx context.Context, req *pb.InitRequest) (*pb.InitResponse, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.parts != nil || s.st.closed {
		return nil, status.Error(codes.FailedPrecondition, "plugin already initialized")
	}
	cfg := req.GetConfig()
	if len(cfg) == 0 {
		cfg = []byte("{}")
	}
	p, err := s.st.init(ctx, req.GetName(), cfg)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "init: %v", err)
	}
	if p == nil {
		p = &Plugin{}
	}
	s.st.parts = p
	resp := &pb.InitResponse{FrontEnd: p.FrontEnd != nil, Radio: p.Radio != nil}
	if p.Translator != nil {
		resp.Schemes = p.Translator.Schemes()
		_, resp.Observer = p.Translator.(Observer)
	}
	return resp, nil
}

type translatorServer struct {
	pb.UnimplementedTranslatorServer
	st *state
}

func (s *translatorServer) translator() (Translator, error) {
	p, err := s.st.get()
	if err != nil {
		return nil, err
	}
	if p.Translator == nil {
		return nil, status.Error(codes.Unimplemented, "plugin has no translator")
	}
	return p.Translator, nil
}

func (s *translatorServer) RoundTrip(ctx context.Context, req *pb.RoundTripRequest) (*pb.RoundTripResponse, error) {
	t, err := s.translator()
	if err != nil {
		return nil, err
	}
	m, err := wire.Decode(req.GetMessage())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp, err := t.RoundTrip(ctx, req.GetTarget(), m)
	if err != nil {
		if ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
			// The host's deadline or cancellation, not a failure.
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return &pb.RoundTripResponse{Failure: wire.Failure(err)}, nil
	}
	b, err := wire.Encode(resp)
	if err != nil {
		return &pb.RoundTripResponse{Failure: wire.Failure(fmt.Errorf("sdk: translator response: %w", err))}, nil
	}
	return &pb.RoundTripResponse{Message: b}, nil
}

func (s *translatorServer) Observe(req *pb.RoundTripRequest, stream pb.Translator_ObserveServer) error {
	t, err := s.translator()
	if err != nil {
		return err
	}
	o, ok := t.(Observer)
	if !ok {
		return status.Error(codes.Unimplemented, "translator cannot observe")
	}
	m, err := wire.Decode(req.GetMessage())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx := stream.Context()
	// One slot, latest wins: a notification is the resource's current
	// state, so a slow host loses stale ones and never blocks the plugin.
	slot := make(chan *coap.Message, 1)
	notify := func(n *coap.Message) {
		if n == nil {
			return
		}
		n = n.Clone()
		for {
			select {
			case slot <- n:
				return
			default:
			}
			select {
			case <-slot:
			default:
			}
		}
	}
	first, cancel, err := o.Observe(ctx, req.GetTarget(), m, notify)
	if err != nil {
		return stream.Send(&pb.Notification{Failure: wire.Failure(err)})
	}
	if cancel != nil {
		defer cancel()
	}
	send := func(m *coap.Message) error {
		b, err := wire.Encode(m)
		if err != nil {
			return stream.Send(&pb.Notification{Failure: wire.Failure(fmt.Errorf("sdk: observe: %w", err))})
		}
		return stream.Send(&pb.Notification{Message: b})
	}
	if err := send(first); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-slot:
			if err := send(n); err != nil {
				return err
			}
		}
	}
}

type frontEndServer struct {
	pb.UnimplementedFrontEndServer
	st *state
}

func (s *frontEndServer) Run(ctx context.Context, req *pb.RunRequest) (*pb.Empty, error) {
	p, err := s.st.get()
	if err != nil {
		return nil, err
	}
	if p.FrontEnd == nil {
		return nil, status.Error(codes.Unimplemented, "plugin has no front end")
	}
	conn, err := s.st.broker.Dial(req.GetHostBrokerId())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "dial host: %v", err)
	}
	defer conn.Close()
	if err := p.FrontEnd.Run(ctx, &hostClient{c: pb.NewHostClient(conn)}); err != nil && ctx.Err() == nil {
		return nil, status.Errorf(codes.Aborted, "front end: %v", err)
	}
	return &pb.Empty{}, nil
}

// hostClient is the Host a FrontEnd gets.
type hostClient struct {
	c pb.HostClient
}

func (h *hostClient) Do(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error) {
	b, err := wire.Encode(req)
	if err != nil {
		return nil, fmt.Errorf("sdk: host do: %w", err)
	}
	resp, err := h.c.Do(ctx, &pb.DoRequest{Message: b, Secure: secure})
	if err != nil {
		return nil, fmt.Errorf("sdk: host do: %w", err)
	}
	if f := resp.GetFailure(); f != nil {
		return nil, fmt.Errorf("sdk: host do: %w", wire.Error(f))
	}
	if len(resp.GetMessage()) == 0 {
		return nil, ErrNoResponse
	}
	m, err := wire.Decode(resp.GetMessage())
	if err != nil {
		return nil, fmt.Errorf("sdk: host do: %w", err)
	}
	return m, nil
}

func (h *hostClient) Observe(ctx context.Context, req *coap.Message, secure bool, notify func(*coap.Message)) error {
	b, err := wire.Encode(req)
	if err != nil {
		return fmt.Errorf("sdk: host observe: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream: gatewayd deregisters the observer
	stream, err := h.c.Observe(sctx, &pb.DoRequest{Message: b, Secure: secure})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("sdk: host observe: %w", err)
	}
	for first := true; ; first = false {
		n, err := stream.Recv()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, io.EOF):
			return fmt.Errorf("sdk: host observe: %w", io.ErrUnexpectedEOF)
		case err != nil:
			return fmt.Errorf("sdk: host observe: %w", err)
		case n.GetFailure() != nil:
			return fmt.Errorf("sdk: host observe: %w", wire.Error(n.GetFailure()))
		case len(n.GetMessage()) == 0 && first:
			return ErrNoResponse
		}
		m, err := wire.Decode(n.GetMessage())
		if err != nil {
			return fmt.Errorf("sdk: host observe: %w", err)
		}
		notify(m)
		if m.Code.Class() != 2 || !m.Options.Has(coap.Observe) {
			return ErrObservationEnded
		}
	}
}

type radioServer struct {
	pb.UnimplementedRadioServer
	st *state
}

func (s *radioServer) radio() (Radio, error) {
	p, err := s.st.get()
	if err != nil {
		return nil, err
	}
	if p.Radio == nil {
		return nil, status.Error(codes.Unimplemented, "plugin has no radio")
	}
	return p.Radio, nil
}

func (s *radioServer) Info(ctx context.Context, _ *pb.Empty) (*pb.RadioInfo, error) {
	r, err := s.radio()
	if err != nil {
		return nil, err
	}
	info, err := r.Info(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "info: %v", err)
	}
	c := info.Counters
	return &pb.RadioInfo{
		ExtAddr: info.ExtAddr[:], Up: info.Up,
		TxFrames: c.TxFrames, TxErrors: c.TxErrors, RxFrames: c.RxFrames,
		RxDropped: c.RxDropped, Reconnects: c.Reconnects, LastError: c.LastError,
	}, nil
}

func (s *radioServer) Configure(ctx context.Context, req *pb.RadioParams) (*pb.ConfigureResponse, error) {
	r, err := s.radio()
	if err != nil {
		return nil, err
	}
	c, ok := r.(RadioConfigurer)
	if !ok {
		return &pb.ConfigureResponse{}, nil
	}
	if req.GetChannel() > 0xff || req.GetPanId() > 0xffff {
		return nil, status.Error(codes.InvalidArgument, "channel or pan id out of range")
	}
	err = c.Configure(ctx, uint8(req.GetChannel()), uint16(req.GetPanId()))
	return &pb.ConfigureResponse{Supported: true, Failure: wire.Failure(err)}, nil
}

func (s *radioServer) Send(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	r, err := s.radio()
	if err != nil {
		return nil, err
	}
	code, text := wire.RadioError(r.Send(ctx, req.GetMpdu()))
	return &pb.SendResponse{Error: code, Text: text}, nil
}

func (s *radioServer) Recv(_ *pb.Empty, stream pb.Radio_RecvServer) error {
	r, err := s.radio()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		f, err := r.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			code, text := wire.RadioError(err)
			return status.Errorf(codes.Unavailable, "recv: %s (%d)", text, code)
		}
		if err := stream.Send(&pb.Frame{Data: f.Data, Rssi: int32(f.RSSI), Lqi: uint32(f.LQI)}); err != nil {
			return err
		}
	}
}
