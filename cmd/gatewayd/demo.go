package main

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// demoTopic is the pub-sub topic the demo's first node publishes to.
const demoTopic = "temperature"

// startDemoPublisher makes the demo's first simulated node a publisher:
// over the radio it creates a topic on the gateway's broker and publishes
// its reading every few seconds. The returned function stops it and waits.
func startDemoPublisher(ctx context.Context, p *bridge.Proxy, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := p.Radios()[0]
		n, ok := sim.FromLink(r.Link())
		if !ok || r.WaitUp(ctx) != nil {
			return
		}
		node := n.SimNodes()[0]
		gw := r.Conn().LocalAddr()
		data, err := createDemoTopic(ctx, node.Endpoint(), gw)
		if err != nil {
			log.Warn("demo publisher: topic not created", "err", err)
			return
		}
		log.Info("demo: node publishes", "component", "demo", "node", node.Addr(), "topic-data", data)
		t := time.NewTicker(sim.TempPeriod)
		defer t.Stop()
		for {
			pub := &coap.Message{Code: coap.PUT, Options: pathOptions(data).SetUint(coap.ContentFormat, 0), Payload: []byte(node.Reading())}
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			if _, err := node.Endpoint().Do(rctx, gw, pub); err != nil && ctx.Err() == nil {
				log.Debug("demo publish", "err", err)
			}
			rcancel()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func createDemoTopic(ctx context.Context, e *coap.Endpoint, gw netip.AddrPort) (string, error) {
	name, rt := demoTopic, pubsub.RTData
	cf := uint16(0)
	props := pubsub.Properties{TopicName: &name, ResourceType: &rt, TopicContentFormat: &cf}
	body, err := props.Encode()
	if err != nil {
		return "", err
	}
	req := &coap.Message{Code: coap.POST, Options: pathOptions(pubsub.Defaults().Path).SetUint(coap.ContentFormat, uint32(pubsub.Defaults().ContentFormat)), Payload: body}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := e.Do(ctx, gw, req)
	if err != nil {
		return "", err
	}
	if resp.Code != coap.Created {
		return "", coap.Errorf(resp.Code, "%s", resp.Payload)
	}
	got, err := pubsub.DecodeProperties(resp.Payload)
	if err != nil || got.TopicData == nil {
		return "", err
	}
	return *got.TopicData, nil
}

func pathOptions(path string) coap.Options {
	var o coap.Options
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		o = o.Insert(coap.URIPath, []byte(seg))
	}
	return o
}
