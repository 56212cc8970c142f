package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio/sim"
	// nodekeys registers the loader of [radio.sim] oscore_dir and
	// sign_key, for the demo and configuration files alike. It links e2e/
	// into gatewayd for the simulated nodes only: the proxy's packages
	// (bridge, cache, observe) still import none of it.
	"github.com/opaque-edge/gatewayd/radio/sim/nodekeys"
)

// demoKeys are the throwaway end-to-end keys of a demo run: the nodes'
// (in the sim config) and the client's (for gatewayctl).
type demoKeys struct {
	sim    sim.Config // oscore_dir and sign_key for the nodes
	client string     // the client's OSCORE context file
	pub    string     // the nodes' public key file
}

// makeDemoKeys writes into dir one OSCORE context pair (the nodes share
// theirs, nodes.toml) and one signing key pair, as `gatewayctl keys` would.
func makeDemoKeys(dir string) (demoKeys, error) {
	k := demoKeys{
		sim:    sim.Config{OSCOREDir: filepath.Join(dir, "nodes"), SignKey: filepath.Join(dir, "node-sign.key")},
		client: filepath.Join(dir, "client.toml"),
		pub:    filepath.Join(dir, "node-sign.pub"),
	}
	if err := os.Mkdir(k.sim.OSCOREDir, 0o700); err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	secret, salt := make([]byte, 32), make([]byte, 8)
	rand.Read(secret) // never fails (crypto/rand)
	rand.Read(salt)
	p := oscore.Params{MasterSecret: secret, MasterSalt: salt}
	cli := oscore.Config{Params: p, SeqStore: oscore.FileSeqStore{Path: "client.toml.seq"}}
	cli.SenderID, cli.RecipientID = []byte{0x01}, []byte{}
	srv := oscore.Config{Params: p, SeqStore: oscore.FileSeqStore{Path: nodekeys.SharedContextFile + ".seq"}}
	srv.SenderID, srv.RecipientID = []byte{}, []byte{0x01}
	if err := oscore.WriteConfig(k.client, cli); err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	if err := oscore.WriteConfig(filepath.Join(k.sim.OSCOREDir, nodekeys.SharedContextFile), srv); err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	priv, err := signed.GenerateKey(nil)
	if err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	if err := signed.WritePrivateKeyFile(k.sim.SignKey, priv); err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	if err := signed.WritePublicKeyFile(k.pub, priv.Public()); err != nil {
		return k, fmt.Errorf("demo: %w", err)
	}
	return k, nil
}

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
		// With a signing key the node publishes COSE_Sign1 readings
		// (Content-Format 18) the broker stores and fans out unread (seed
		// R5.x); without one, plain text.
		_, err := node.SignReading("probe")
		signed := err == nil
		cf := uint16(0)
		if signed {
			cf = 18
		}
		data, err := createDemoTopic(ctx, node.Endpoint(), gw, cf)
		if err != nil {
			log.Warn("demo publisher: topic not created", "err", err)
			return
		}
		// Subscribers verify against the topic-data URI on the proxy.
		uri := fmt.Sprintf("coap://%v%s", p.Addrs()[0], data)
		log.Info("demo: node publishes", "component", "demo", "node", node.Addr(), "topic-data", uri, "signed", signed)
		t := time.NewTicker(sim.TempPeriod)
		defer t.Stop()
		for {
			payload := []byte(node.Reading())
			if signed {
				if payload, err = node.SignReading(uri); err != nil {
					log.Warn("demo publisher: sign", "err", err)
					return
				}
			}
			pub := &coap.Message{Code: coap.PUT, Options: pathOptions(data).SetUint(coap.ContentFormat, uint32(cf)), Payload: payload}
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

func createDemoTopic(ctx context.Context, e *coap.Endpoint, gw netip.AddrPort, cf uint16) (string, error) {
	name, rt := demoTopic, pubsub.RTData
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
