package plugins

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// hostServer is the Host service a plugin's front end calls: Do runs a
// request through the chain as a request from the plugin's synthetic peer.
type hostServer struct {
	pb.UnimplementedHostServer
	p *plug
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
	w := &capture{req: m}
	err = s.p.h.chain.ServeCoAP(ctx, w, &coap.Request{Msg: m, Peer: s.p.peer, Secure: req.GetSecure()})
	if r := w.response(); r != nil {
		b, err := wire.Encode(r)
		if err != nil {
			return &pb.DoResponse{Failure: wire.Failure(err)}, nil
		}
		return &pb.DoResponse{Message: b}, nil
	}
	if err != nil {
		return s.answer(m, err)
	}
	return &pb.DoResponse{}, nil // deliberately unanswered
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
// response, as an endpoint would send it.
type capture struct {
	req  *coap.Message
	mu   sync.Mutex
	resp *coap.Message // guarded by mu
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
