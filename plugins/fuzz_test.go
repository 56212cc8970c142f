package plugins

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// pluginSeeds are the messages plugins send the host, as the tests' real
// plugins send them: a front end's GET with Proxy-Uri, an MQTT message's
// PUT, an OSCORE POST from the HTTP plugin; a translator's responses,
// plain and OSCORE-protected; a notification carrying block 0 of a
// libcoap representation (ETag, Block2 0/M/1024, Size2), and failures.
func pluginSeeds(f *testing.F) [][]byte {
	f.Helper()
	enc := func(m *coap.Message) []byte {
		b, err := wire.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	get := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: []byte{1, 2},
		Options: coap.Options(nil).Insert(coap.ProxyURI, []byte("coap://127.0.0.1:5683/example_data"))}
	put := &coap.Message{Type: coap.Confirmable, Code: coap.PUT, Payload: bytes.Repeat([]byte{0xd2, 0x84}, 600),
		Options: coap.Options(nil).Insert(coap.ProxyURI, []byte("coap://[fd00::2]/ps/data/valve")).SetUint(coap.ContentFormat, 42)}
	oscore := &coap.Message{Type: coap.Confirmable, Code: coap.POST, Payload: []byte{0x61, 0x2f, 0x10, 0x92, 0xf1, 0x77, 0x6f, 0x1c},
		Options: coap.Options(nil).Insert(coap.OSCORE, []byte{0x09, 0x14}).Insert(coap.ProxyURI, []byte("coap://[fd00::1]"))}
	content := &coap.Message{Type: coap.Acknowledgement, Code: coap.Content, Payload: []byte("hello"),
		Options: coap.Options(nil).SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 60)}
	protected := &coap.Message{Type: coap.Acknowledgement, Code: coap.Changed, Payload: []byte{0xdb, 0xaa, 0xd1, 0xe9, 0xa7, 0xe7, 0xb7, 0x47},
		Options: coap.Options(nil).Insert(coap.OSCORE, nil)}
	block0 := &coap.Message{Type: coap.Confirmable, Code: coap.Content, Payload: bytes.Repeat([]byte{0x7e}, 1024),
		Options: coap.Options(nil).Insert(coap.ETag, []byte{2}).SetUint(coap.Observe, 3).
			Insert(coap.Block2, blockwise.Block{More: true, SZX: 6}.Value()).SetUint(coap.Size2, 10240)}
	tooLarge := wire.Failure(&coap.Error{Code: coap.BadGateway, MaxAge: -1, Diagnostic: "representation of 10240 bytes over the gateway's max_body of 4096",
		Err: &blockwise.TooLargeError{Size: 10240, Max: 4096}})
	var seeds [][]byte
	for _, m := range []proto.Message{
		&pb.DoRequest{Message: enc(get)},
		&pb.DoRequest{Message: enc(put), Secure: true},
		&pb.DoRequest{Message: enc(oscore)},
		&pb.RoundTripResponse{Message: enc(content)},
		&pb.RoundTripResponse{Message: enc(protected)},
		&pb.RoundTripResponse{Failure: wire.Failure(&coap.Error{Code: coap.ServiceUnavailable, MaxAge: 7, Diagnostic: "busy"})},
		&pb.Notification{Message: enc(block0)},
		&pb.Notification{Failure: tooLarge},
		&pb.DoResponse{Failure: tooLarge},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzHostDecodesPluginBytes feeds what the host decodes from a plugin
// (a front end's DoRequest, a translator's RoundTripResponse or
// Notification, their Failures) through the host's own decoding: never a
// panic, a request is a request, a response a response, a failure an
// error, and a message that decodes encodes back to the same bytes.
func FuzzHostDecodesPluginBytes(f *testing.F) {
	for _, s := range pluginSeeds(f) {
		f.Add(s)
	}
	p := &plug{cfg: Config{Name: "fuzz"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var do pb.DoRequest
		if proto.Unmarshal(data, &do) == nil {
			if m, err := wire.Decode(do.GetMessage()); err == nil {
				roundTrips(t, m, do.GetMessage())
				_ = targetOf(m)
				_ = blockwise.Transferring(m)
			}
		}
		for _, msg := range []interface {
			proto.Message
			GetMessage() []byte
			GetFailure() *pb.Failure
		}{&pb.RoundTripResponse{}, &pb.Notification{}, &pb.DoResponse{}} {
			if proto.Unmarshal(data, msg) != nil {
				continue
			}
			if f := msg.GetFailure(); f != nil {
				err := p.failure("fuzz", f)
				if err == nil {
					t.Fatal("a failure decoded to no error")
				}
				var ce *coap.Error
				if errors.As(err, &ce) && !ce.Code.IsResponse() {
					t.Fatalf("failure became code %v", ce.Code)
				}
				var tl *blockwise.TooLargeError
				if errors.As(err, &tl) && (tl.Size < 0 || tl.Max < 0) {
					t.Fatalf("negative sizes %+v", tl)
				}
				continue
			}
			m, err := p.response("fuzz", msg.GetMessage())
			if err != nil {
				if !errors.Is(err, ErrPlugin) {
					t.Fatalf("bad bytes are not the plugin's fault: %v", err)
				}
				continue
			}
			if !m.Code.IsResponse() {
				t.Fatalf("response with code %v", m.Code)
			}
			roundTrips(t, m, msg.GetMessage())
			// What a completion does with the first block: the
			// plugin's bytes as the first response, the same bytes
			// as every later one.
			c := &blockwise.Client{MaxBody: 4096, RoundTrip: func(context.Context, *coap.Message) (*coap.Message, error) {
				return m.Clone(), nil
			}}
			whole, err := c.Complete(context.Background(), &coap.Message{Code: coap.GET}, m)
			if err == nil && whole.Code.Class() == 2 && len(whole.Payload) > 4096 {
				t.Fatalf("completed %d bytes over max_body 4096", len(whole.Payload))
			}
		}
	})
}

func roundTrips(t *testing.T, m *coap.Message, b []byte) {
	t.Helper()
	out, err := wire.Encode(m)
	if err != nil {
		t.Fatalf("decoded message does not encode: %v", err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
	}
}
