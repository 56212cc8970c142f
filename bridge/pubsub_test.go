package bridge

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

func pathOpts(path string) coap.Options {
	var o coap.Options
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		o = o.Insert(coap.URIPath, []byte(seg))
	}
	return o
}

// The broker through the whole chain: discovery, topic creation, two
// subscribers fanned out by the hub, a COSE-like publication delivered
// byte for byte (PR5.1, PR5.2).
func TestPubSubThroughTheChain(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		c.PubSub = pubsub.Defaults()
		c.PubSub.Enabled = true
		c.PubSub.StateDir = t.TempDir()
	})
	c := client(t)
	wk := &coap.Message{Code: coap.GET, Options: pathOpts(".well-known/core").Insert(coap.URIQuery, []byte("rt=core.ps.coll"))}
	if resp := do(t, c, p, wk); !bytes.Contains(resp.Payload, []byte("core.ps.coll")) {
		t.Fatalf("discovery: %q", resp.Payload)
	}
	name, rt := "temp", pubsub.RTData
	props := pubsub.Properties{TopicName: &name, ResourceType: &rt}
	body, err := props.Encode()
	if err != nil {
		t.Fatal(err)
	}
	create := &coap.Message{Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: body}
	resp := do(t, c, p, create)
	if resp.Code != coap.Created {
		t.Fatalf("create: %v %q", resp.Code, resp.Payload)
	}
	got, err := pubsub.DecodeProperties(resp.Payload)
	if err != nil || got.TopicData == nil {
		t.Fatalf("created topic has no topic-data: %v", err)
	}
	data := *got.TopicData
	// First publication makes the topic fully created.
	pub := func(payload []byte) coap.Code {
		return do(t, c, p, &coap.Message{Code: coap.PUT, Options: pathOpts(data).SetUint(coap.ContentFormat, 18), Payload: payload}).Code
	}
	if code := pub([]byte{0xd2, 0x84, 0x00, 0xff}); code != coap.Created {
		t.Fatalf("first publish: %v", code)
	}
	got1, got2 := make(chan []byte, 8), make(chan []byte, 8)
	for _, ch := range []chan []byte{got1, got2} {
		sub := client(t)
		ch := ch
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		first, o, err := sub.Observe(ctx, p.Addrs()[0], &coap.Message{Code: coap.GET, Options: pathOpts(data)}, func(m *coap.Message) { ch <- m.Payload })
		cancel()
		if err != nil || o == nil {
			t.Fatalf("subscribe: %v %v", first, err)
		}
	}
	cose := []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0x00, 0xff, 0x0d, 0x0a}
	time.Sleep(10 * time.Millisecond) // publications faster than min_publish_interval are refused
	testutil.Eventually(t, "the publication taken once min_publish_interval passed", func() bool { return pub(cose) != coap.TooManyRequests })
	for i, ch := range []chan []byte{got1, got2} {
		select {
		case b := <-ch:
			if !bytes.Equal(b, cose) {
				t.Fatalf("subscriber %d got %x, want %x", i, b, cose)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber %d got no publication", i)
		}
	}
}
