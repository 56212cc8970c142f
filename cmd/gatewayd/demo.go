//go:build !nodemo

// The demo: what `go run ./cmd/gatewayd` runs with no -config, and all
// that only it needs. The packaged daemon is built with -tags nodemo and
// links none of it: not the simulator with its pseudo-terminal, not the
// end-to-end code of the simulated nodes' keys.

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
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
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	// nodekeys registers the loader of [radio.sim] oscore_dir and
	// sign_key, for the demo and configuration files alike. It links e2e/
	// into this build for the simulated nodes only: the proxy's packages
	// (bridge, cache, observe) still import none of it.
	"github.com/opaque-edge/gatewayd/radio/sim/nodekeys"
)

func init() { demo = runDemo }

// demoListen is where the demo serves CoAP, and demoAdmin its admin
// endpoint with the console: beside, not on, the 9683 an installed
// gatewayd uses. Tests move them to free ports.
var (
	demoListen = "udp://127.0.0.1:5683"
	demoAdmin  = "127.0.0.1:9684"
)

// runDemo is gatewayd with no -config: a simulated radio with its nodes,
// which register with the resource directory and so become reverse
// routes by name, the broker with a node publishing to it, and
// throwaway end-to-end keys for the nodes and the client, all in a
// temporary directory removed at exit. With check, it checks that
// configuration and stops.
func runDemo(ctx context.Context, d *daemon, check bool) error {
	stateDir, err := os.MkdirTemp("", "gatewayd-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(stateDir)
	keys, err := makeDemoKeys(stateDir)
	if err != nil {
		return err
	}
	cfg := demoConfig(stateDir, keys.sim)
	if check {
		return d.check(cfg, "configuration ok: the built-in demo defaults, since no -config was given (the installed file: -config /etc/gatewayd/gatewayd.toml)")
	}
	p, n, err := d.start(ctx, cfg)
	if err != nil {
		return err
	}
	printBanner(d.stdout, p.Addrs()[0], p.Radios()[0].Nodes(), keys, p.AdminAddr())
	stopRegistrations := startDemoRegistrations(ctx, p, d.log)
	defer stopRegistrations()
	stopPublisher := startDemoPublisher(ctx, p, d.log)
	defer stopPublisher()
	return serve(ctx, p, "", n, d.log)
}

// demoConfig is the demo's configuration: the defaults, the broker, the
// resource directory and a "sim" radio whose nodes hold the keys simKeys
// names. The nodes' names are routes once they have registered
// (startDemoRegistrations), not [[route]] entries: a [[route]] name is
// one no registration may take.
func demoConfig(stateDir string, simKeys sim.Config) bridge.Config {
	cfg := bridge.Defaults()
	cfg.Proxy.Listen = []string{demoListen}
	cfg.PubSub.Enabled = true
	cfg.PubSub.StateDir = stateDir
	cfg.RD.Enabled = true
	cfg.RD.StateDir = filepath.Join(stateDir, "rd")
	cfg.Metrics.Listen = demoAdmin
	cfg.Radio = []radio.Config{{Name: "sim", Driver: "sim", Options: simKeys}}
	// Group requests from this host: one request, every node's answer.
	cfg.GroupComm.Clients = []string{"127.0.0.0/8", "::1/128"}
	return cfg
}

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

// demoLifetime is the lifetime the demo's nodes register with; they
// register again at half of it, as a node keeps its registration.
const demoLifetime = 10 * time.Minute

// demoName is the endpoint name the demo's node i registers with.
func demoName(i int) string { return fmt.Sprintf("node%d", i+1) }

// startDemoRegistrations makes each simulated node register with the
// gateway's resource directory over the radio, by simple registration
// (RFC 9176 §5.1: a POST to /.well-known/rd, after which the directory
// GETs the node's /.well-known/core), and register again before its
// lifetime ends. The returned function stops them and waits.
func startDemoRegistrations(ctx context.Context, p *bridge.Proxy, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	r := p.Radios()[0]
	n, ok := sim.FromLink(r.Link())
	if !ok {
		cancel()
		return func() {}
	}
	for i, node := range n.SimNodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.WaitUp(ctx) != nil {
				return
			}
			gw := r.Conn().LocalAddr()
			for {
				wait := demoLifetime / 2
				err := registerDemoNode(ctx, node.Endpoint(), gw, demoName(i))
				var ce *coap.Error
				switch {
				case err == nil:
					log.Info("demo: node registered", "component", "demo", "node", node.Addr(), "ep", demoName(i))
				case errors.As(err, &ce) && ce.Code.Class() == 4:
					log.Warn("demo: node not registered", "component", "demo", "node", node.Addr(), "err", err)
					return
				default:
					// The radio settling or a frame lost: try again soon.
					wait = time.Second
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// registerDemoNode sends one simple registration of ep through e to the
// gateway at gw.
func registerDemoNode(ctx context.Context, e *coap.Endpoint, gw netip.AddrPort, ep string) error {
	req := &coap.Message{Code: coap.POST, Options: pathOptions("/.well-known/rd").
		Insert(coap.URIQuery, []byte("ep="+ep)).
		Insert(coap.URIQuery, fmt.Appendf(nil, "lt=%d", int(demoLifetime.Seconds())))}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := e.Do(ctx, gw, req)
	if err != nil {
		return err
	}
	if resp.Code != coap.Changed {
		return coap.Errorf(resp.Code, "%s", resp.Payload)
	}
	return nil
}

// errNoTopicData: the broker created the topic but named no topic-data
// resource to publish to.
var errNoTopicData = errors.New("created without topic-data")

// createDemoTopic creates the demo's topic on the broker at gw through e
// and returns its topic-data path.
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
	if err != nil {
		return "", fmt.Errorf("demo: topic %q: %w", demoTopic, err)
	}
	if got.TopicData == nil {
		return "", fmt.Errorf("demo: topic %q: %w", demoTopic, errNoTopicData)
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

func printBanner(w io.Writer, proxy netip.AddrPort, nodes []netip.Addr, keys demoKeys, admin string) {
	fmt.Fprintf(w, "\ngatewayd demo: a CoAP proxy on %v in front of a simulated 802.15.4 radio\n", proxy)
	fmt.Fprintf(w, "(a fake OpenThread RCP on a pseudo-terminal, driven through the real Spinel driver)\n")
	fmt.Fprintf(w, "with %d simulated nodes:", len(nodes))
	for _, n := range nodes {
		fmt.Fprintf(w, " %v", n)
	}
	c := "coap-client-notls" // Debian package libcoap3-bin
	fmt.Fprintf(w, `

Try (coap-client-notls is in the Debian package libcoap3-bin):

  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/sensors/temp'
  %[1]s -m put -e open -P coap://%[2]v 'coap://[%[3]v]/actuators/valve'
  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/actuators/valve'
  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/.well-known/core'
  %[1]s -m get coap://%[2]v/.well-known/core

One request to all three nodes at once (a group request to All CoAP
Nodes; each node's answer comes back with its address in Reply-From):

  go run ./cmd/gatewayctl group -proxy coap://%[2]v 'coap://[ff05::fd]/sensors/temp'
  %[1]s -m get -O 65002,0x05 -P coap://%[2]v 'coap://[ff05::fd]/sensors/temp'   # shows the first answer

The nodes register with the gateway's resource directory (RFC 9176) as
node1, node2 and node3; list them, find their resources, and reach one by
the name it registered:

  %[1]s -m get coap://%[2]v/rd-lookup/ep
  %[1]s -m get 'coap://%[2]v/rd-lookup/res?rt=temperature-c'
  %[1]s -m get coap://%[2]v/node1/sensors/temp

Node 1 publishes signed readings (COSE_Sign1) to the gateway's pub-sub
broker; find the topic and subscribe for 30 s:

  %[1]s -m get 'coap://%[2]v/.well-known/core?rt=core.ps.data'
  %[1]s -s 30 -m get coap://%[2]v/ps/data/<id from the line above>

End to end, with throwaway keys the nodes and this client hold and the
proxy does not:

  go run ./cmd/gatewayctl get -oscore %[4]s -proxy coap://%[2]v 'coap://[%[3]v]/oscore/temp'
  go run ./cmd/gatewayctl observe -verify %[5]s -proxy coap://%[2]v 'coap://[%[3]v]/signed/temp'
`, c, proxy, nodes[0], keys.client, keys.pub)
	if admin != "" {
		fmt.Fprintf(w, `
The operator console (radios, nodes with their signal, routes, Observe,
cache, topics, plugins, last errors) is at http://%[1]s/ in a browser;
the same as JSON:

  curl -s http://%[1]s/api/v1/status
`, admin)
	}
	fmt.Fprintf(w, "\nStop with Ctrl-C.\n")
}
