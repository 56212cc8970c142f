package mqtt

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/opaque-edge/gatewayd/coap"
)

// The down direction PUTs one message at a time (seconds each, with
// retries) and acknowledges only afterwards, while paho buffers what the
// broker sends in a channel as deep as the client's Receive Maximum, and
// reads packets of any size. Without Receive Maximum and Maximum Packet
// Size in CONNECT the broker may push 65535 unacknowledged QoS 1 messages
// of up to 256 MiB each into the gateway: any publisher on a down topic
// can grow its memory without bound.
func TestConnectBoundsWhatTheBrokerMayQueue(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan *packets.Connect, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		cp, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		if cc, ok := cp.Content.(*packets.Connect); ok {
			got <- cc
		}
	}()
	b, err := New(Config{
		Broker:   "mqtt://" + l.Addr().String(),
		ClientID: "limits-test",
		Down:     []Down{{Topic: "gw/down/+", Put: "coap://[fd00::1]/ps/data/valve"}},
	}, func(context.Context, *coap.Message, bool) (*coap.Message, error) { return nil, nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); b.connect(ctx) }()
	defer func() { cancel(); <-done }()
	var cc *packets.Connect
	select {
	case cc = <-got:
	case <-ctx.Done():
		t.Fatal("no CONNECT")
	}
	p := cc.Properties
	if p == nil || p.ReceiveMaximum == nil || *p.ReceiveMaximum > 64 {
		t.Errorf("CONNECT Receive Maximum = %v, want a small bound (paho's default buffers 65535)", p.ReceiveMaximum)
	}
	if p == nil || p.MaximumPacketSize == nil {
		t.Errorf("CONNECT has no Maximum Packet Size: the broker may send packets of up to 256 MiB")
	}
}
