package bridge

import (
	"context"
	"net"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
)

// rawOrigin answers every request with a small uncacheable 2.05 straight
// from its read loop, so that the benchmark measures the proxy.
func rawOrigin(b *testing.B) string {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		out := make([]byte, 0, 64)
		var m coap.Message
		for {
			n, peer, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if m.Decode(buf[:n]) != nil {
				continue
			}
			resp := coap.Message{Type: coap.Acknowledgement, Code: coap.Content, MID: m.MID, Token: m.Token, Payload: []byte("21.5")}
			resp.Options = append(resp.Options[:0], coap.Option{ID: coap.MaxAge, Value: []byte{0}})
			out, _ = resp.AppendMarshal(out[:0])
			c.WriteToUDPAddrPort(out, peer)
		}
	}()
	return c.LocalAddr().String()
}

// benchProxy is a proxy with the default configuration on a UDP
// listener, and a client endpoint to reach it.
func benchProxy(b *testing.B) (*Proxy, *coap.Endpoint) {
	cfg := Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	p, err := New(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	c := coap.NewEndpoint(u, coap.EndpointConfig{})
	b.Cleanup(func() { c.Close() })
	return p, c
}

// BenchmarkForwardGET is one forwarded GET through the whole chain over
// loopback UDP: client → proxy → origin → proxy → client. Allocations
// include the client's.
func BenchmarkForwardGET(b *testing.B) {
	origin := rawOrigin(b)
	p, c := benchProxy(b)
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + origin + "/bench")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Do(context.Background(), p.Addrs()[0], req)
			if err != nil || resp.Code != coap.Content {
				b.Fatal(resp, err)
			}
		}
	})
}

// BenchmarkForwardGETOverStream is BenchmarkForwardGET from a client over
// TCP and over WebSockets (RFC 8323) to the same UDP origin, one
// connection shared by the parallel requests, as a multiplexing client
// would.
func BenchmarkForwardGETOverStream(b *testing.B) {
	for _, scheme := range []string{"tcp", "ws"} {
		b.Run(scheme, func(b *testing.B) {
			origin := rawOrigin(b)
			cfg := Defaults()
			cfg.Proxy.Listen = []string{"udp://127.0.0.1:0", scheme + "://127.0.0.1:0"}
			p, err := New(context.Background(), cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			cl := stream.NewClient(stream.Config{})
			defer cl.Close()
			ctx := context.Background()
			var c *stream.Conn
			if scheme == "tcp" {
				c, err = cl.Dial(ctx, p.StreamAddrs()[0].String(), nil)
			} else {
				c, err = cl.DialWS(ctx, "ws://"+p.StreamAddrs()[0].String()+"/.well-known/coap", nil)
			}
			if err != nil {
				b.Fatal(err)
			}
			req := &coap.Message{Code: coap.GET, Options: proxyURI("coap://" + origin + "/bench")}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Do(ctx, req)
					if err != nil || resp.Code != coap.Content {
						b.Fatal(resp, err)
					}
				}
			})
		})
	}
}

// BenchmarkForwardGETToTCPOrigin is a UDP client's forwarded GET to a
// coap+tcp origin over the pooled connection.
func BenchmarkForwardGETToTCPOrigin(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := stream.NewServer(stream.Config{Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		resp := &coap.Message{Code: coap.Content, Payload: []byte("21.5")}
		resp.Options = resp.Options.SetUint(coap.MaxAge, 0)
		return w.WriteResponse(resp)
	})})
	if err := s.Serve(l, nil); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, c := benchProxy(b)
	req := &coap.Message{Code: coap.GET, Options: proxyURI("coap+tcp://" + l.Addr().String() + "/bench")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Do(context.Background(), p.Addrs()[0], req)
			if err != nil || resp.Code != coap.Content {
				b.Fatal(resp, err)
			}
		}
	})
}
