package main

// The plugin acceptance tests at the daemon's level: a real gatewayd (in
// process, or the built binary where process death is the point) with its
// real plugin processes, real peers (curl, mosquitto, mosquitto_pub) and a
// simulated radio whose nodes hold the end-to-end keys gatewayd is never
// given.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/plugins/httpcoap"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/sim/nodekeys"
)

// simReadingRE is a simulated node's temperature reading.
var simReadingRE = regexp.MustCompile(`^[0-9]+\.[0-9]$`)

// oscorePairFor writes the nodes' server context into dir (shared by all
// nodes, nodekeys.SharedContextFile) and returns the client's context.
func oscorePairFor(t *testing.T, dir string) *oscore.Context {
	t.Helper()
	secret, salt := make([]byte, 32), make([]byte, 8)
	rand.Read(secret)
	rand.Read(salt)
	p := oscore.Params{MasterSecret: secret, MasterSalt: salt}
	srv := oscore.Config{Params: p, SeqStore: oscore.FileSeqStore{Path: nodekeys.SharedContextFile + ".seq"}}
	srv.SenderID, srv.RecipientID = []byte{}, []byte{0x01}
	if err := oscore.WriteConfig(filepath.Join(dir, nodekeys.SharedContextFile), srv); err != nil {
		t.Fatal(err)
	}
	cli := oscore.Config{Params: p}
	cli.SenderID, cli.RecipientID = []byte{0x01}, []byte{}
	c, err := oscore.NewContext(cli)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// OSCORE over HTTP (RFC 8613 §11): a GET protected in Go goes out with
// curl as a POST with the OSCORE header field and an application/oscore
// body, through the HTTP plugin's front end and gatewayd's chain to a
// simulated node that holds the server context; the 200 that comes back,
// mapped to a CoAP response, unprotects with the client context to the
// node's reading. gatewayd's configuration holds no key.
func TestHTTPPluginCarriesOSCOREToSimNodeAndBack(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	nodes := t.TempDir()
	client := oscorePairFor(t, nodes)
	proxy, httpPort := freePort(t), freeTCPPort(t)
	config := httpPluginConfig(proxy, "", bin, sum, httpPort, fmt.Sprintf("[radio.sim]\noscore_dir = %q", nodes))
	startGatewayd(t, config)

	node := "coap://[" + sim.NodeAddr(sim.DefaultPrefix, 0).String() + "]"
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
	req.Options = req.Options.Insert(coap.ProxyURI, []byte(node+"/oscore/temp"))
	dir := t.TempDir()
	// Each try is a new request with a new sequence number: the front end
	// and the radio may take a moment after gatewayd reports it started.
	var (
		status int
		hdr    http.Header
		body   []byte
		ex     *oscore.Exchange
	)
	var curlErr string
	defer func() {
		if t.Failed() && curlErr != "" {
			t.Logf("last curl: %s", curlErr)
		}
	}()
	testutil.EventuallyWithin(t, 15*time.Second, "an answer other than 5.03 (the sim radio up)", func() bool {
		p, x, err := client.ProtectRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		if p.Code != coap.POST {
			t.Fatalf("outer code %v, want POST", p.Code)
		}
		opt, _ := p.Options.Get(coap.OSCORE)
		// The outer Proxy-Uri is the node's scheme and host only (§4.1.3.3);
		// the path travels encrypted.
		outer, _ := p.Options.Get(coap.ProxyURI)
		if strings.Contains(string(outer), "oscore") {
			t.Fatalf("outer Proxy-Uri %q shows the path", outer)
		}
		in := filepath.Join(dir, "request")
		if err := os.WriteFile(in, p.Payload, 0o600); err != nil {
			t.Fatal(err)
		}
		hdrFile, bodyFile := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
		out, err := exec.Command(tool(t, "curl"), "-sS", "--max-time", "20", "-g", "--path-as-is",
			"-X", "POST", "-H", "OSCORE: "+httpcoap.EncodeOSCORE(opt), "-H", "Content-Type: application/oscore",
			"--data-binary", "@"+in, "-D", hdrFile, "-o", bodyFile, "-w", "%{http_code}",
			fmt.Sprintf("http://127.0.0.1:%d/hc/%s/", httpPort, outer)).CombinedOutput()
		if err == nil {
			status, _ = strconv.Atoi(strings.TrimSpace(string(out)))
			hdr = readHeaders(t, hdrFile)
			if body, err = os.ReadFile(bodyFile); err != nil {
				t.Fatal(err)
			}
			ex = x
			// 503: the sim radio is not up yet.
			return status != http.StatusServiceUnavailable
		}
		curlErr = fmt.Sprintf("%v\n%s", err, out)
		return false
	})
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/oscore" || hdr.Get("OSCORE") == "" {
		t.Fatalf("HTTP %d, headers %v, body %q", status, hdr, body)
	}
	opt, err := httpcoap.DecodeOSCORE(hdr.Get("OSCORE"))
	if err != nil {
		t.Fatal(err)
	}
	// §11.3: the 200 is the outer 2.04 with the OSCORE option and the body
	// as the ciphertext.
	resp := &coap.Message{Type: coap.Acknowledgement, Code: coap.Changed, Payload: body}
	resp.Options = resp.Options.Insert(coap.OSCORE, opt)
	m, err := ex.UnprotectResponse(resp)
	if err != nil {
		t.Fatalf("unprotect: %v", err)
	}
	if cf, ok := m.Options.Uint(coap.ContentFormat); m.Code != coap.Content || !ok || cf != 0 || !simReadingRE.Match(m.Payload) {
		t.Fatalf("inner response %v cf %d (%v) %q, want 2.05 text/plain reading", m.Code, cf, ok, m.Payload)
	}
	// Unprotected, the resource is not served: the node answers 4.01,
	// which shows the answer above came from the node's context.
	if out := curl(t, "-g", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", fmt.Sprintf("http://127.0.0.1:%d/hc/%s/oscore/temp", httpPort, node)); out != "403" {
		t.Fatalf("unprotected GET: HTTP %s, want 403 (4.01)", out)
	}
}

// readHeaders parses curl's -D output (the last response's header block).
func readHeaders(t *testing.T, path string) http.Header {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for _, l := range strings.Split(string(b), "\r\n") {
		if strings.HasPrefix(l, "HTTP/") {
			h = http.Header{}
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return h
}

// warnings are the lines of a log at level WARN or ERROR.
func warnings(log string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(log, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// mosquitto is a real broker on 127.0.0.1 (internal/testpeer).
type mosquitto = testpeer.Mosquitto

func startMosquitto(t *testing.T) *mosquitto { return testpeer.StartMosquitto(t) }

// mqttConnect connects a paho MQTT v5 client with a clean session.
func mqttConnect(ctx context.Context, addr, id string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	conn, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onPublish(pr.Packet); return true, nil },
		}
	}
	cli := paho.NewClient(cfg)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ca, err := cli.Connect(cctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("connack reason %d", ca.ReasonCode)
	}
	return cli, nil
}

func mqttClose(cli *paho.Client) {
	_ = cli.Disconnect(&paho.Disconnect{})
	select {
	case <-cli.Done():
	case <-time.After(2 * time.Second):
	}
}

// pathOpts turns "/ps/data/x" into Uri-Path options.
func pathOpts(path string) coap.Options {
	var o coap.Options
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		o = o.Insert(coap.URIPath, []byte(seg))
	}
	return o
}

// createTopic creates a pub-sub topic on gatewayd with the CoAP client c
// (draft-ietf-core-coap-pubsub §2.4.3) and returns its topic-data path.
func createTopic(t *testing.T, c *coap.Endpoint, gw netip.AddrPort, name, data string, cf uint16) string {
	t.Helper()
	rt := pubsub.RTData
	props := pubsub.Properties{TopicName: &name, TopicData: &data, ResourceType: &rt, TopicContentFormat: &cf}
	body, err := props.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, gw, &coap.Message{Type: coap.Confirmable, Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: body})
	if err != nil || resp.Code != coap.Created {
		t.Fatalf("create topic: %v %v", resp, err)
	}
	got, err := pubsub.DecodeProperties(resp.Payload)
	if err != nil || got.TopicData == nil {
		t.Fatalf("created topic: %v %+v", err, got)
	}
	return *got.TopicData
}

func coapEndpoint(t *testing.T) *coap.Endpoint {
	t.Helper()
	u, err := coap.ListenUDP(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{})
	t.Cleanup(func() { e.Close() })
	return e
}

// putRecorder is a CoAP origin that keeps, in order, the payload of every
// PUT it answers.
type putRecorder struct {
	addr netip.AddrPort
	put  chan struct{} // a token after each PUT is kept, for waiting on arrivals
	mu   sync.Mutex
	got  [][]byte // guarded by mu
}

func newPutRecorder(t *testing.T) *putRecorder {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &putRecorder{addr: u.LocalAddr(), put: make(chan struct{}, 1)}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		if req.Msg.Code != coap.PUT {
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
		r.mu.Lock()
		r.got = append(r.got, append([]byte(nil), req.Msg.Payload...))
		r.mu.Unlock()
		select {
		case r.put <- struct{}{}:
		default: // a token is waiting already
		}
		return w.WriteResponse(&coap.Message{Code: coap.Changed})
	})})
	t.Cleanup(func() { e.Close() })
	return r
}

func (r *putRecorder) payloads() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// mqttGatewayRecording starts mosquitto and gatewayd (in process) with the
// sim radio, the pub-sub broker and the mqtt plugin bridging the first
// node's /signed/temp up to gw/node1/temp, gw/in/readings down to the
// topic-data /ps/data/readings of gatewayd itself, and gw/in/log down to a
// CoAP origin that records every PUT. It returns the broker, gatewayd's
// address, the node's key ID and public key, gatewayd's log, the recorder
// and the admin endpoint's address.
func mqttGatewayRecording(t *testing.T) (*mosquitto, netip.AddrPort, []byte, any, *syncBuffer, *putRecorder, string) {
	t.Helper()
	rec := newPutRecorder(t)
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/mqtt/cmd/gatewayd-mqtt")
	b := startMosquitto(t)
	keyDir := t.TempDir()
	priv, err := signed.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := signed.WritePrivateKeyFile(filepath.Join(keyDir, "node.key"), priv); err != nil {
		t.Fatal(err)
	}
	kid, err := signed.KeyID(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	proxy := freePort(t)
	gw := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(proxy))
	node := "coap://[" + sim.NodeAddr(sim.DefaultPrefix, 0).String() + "]"
	g := startGatewayd(t, fmt.Sprintf(`
[proxy]
listen = ["udp://127.0.0.1:%[1]d"]
timeout = "10s"

[metrics]
listen = "127.0.0.1:0"

[pubsub]
enabled = true
state_dir = %[2]q
min_publish_interval = "1ms"

[[radio]]
name = "sim"
driver = "sim"
[radio.sim]
sign_key = %[3]q

[[plugin]]
name = "mqtt"
path = %[4]q
sha256 = %[5]q
[plugin.config]
broker = "mqtt://%[6]s"
client_id = "gw-e2e"
put_timeout = 10

[[plugin.config.up]]
observe = "%[7]s/signed/temp"
topic = "gw/node1/temp"
retain = true

[[plugin.config.down]]
topic = "gw/in/readings"
put = "coap://127.0.0.1:%[1]d/ps/data/readings"
content_format = 42

[[plugin.config.down]]
topic = "gw/in/log"
put = "coap://%[8]s/log"
content_format = 0
`, proxy, t.TempDir(), filepath.Join(keyDir, "node.key"), bin, sum, b.Addr(), node, rec.addr), debugLog())
	return b, gw, kid, priv.Public(), g.log, rec, g.adminAddr(t)
}

// The mqtt plugin against the real mosquitto: the node's signed readings
// reach an MQTT subscriber byte for byte (each verifies against the node's
// key for its URI and Content-Format 0), and what mosquitto_pub publishes
// reaches a CoAP subscriber of a pub-sub topic on gatewayd byte for byte.
func TestMQTTPluginBridgesSignedReadingsUpAndPublicationsDown(t *testing.T) {
	b, gw, kid, pub, log, _, admin := mqttGatewayRecording(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// Up: the plugin publishes each new representation of /signed/temp
	// (retained, so the subscriber also gets the latest at once).
	type msg struct {
		payload []byte
		cf      string
	}
	got := make(chan msg, 16)
	sub, err := mqttConnect(ctx, b.Addr(), "e2e-sub", func(p *paho.Publish) {
		m := msg{payload: bytes.Clone(p.Payload)}
		if p.Properties != nil {
			m.cf = p.Properties.User.Get("coap-cf")
		}
		got <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mqttClose(sub)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gw/node1/temp", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	v := signed.NewVerifier(signed.VerifierConfig{})
	if err := v.AddKey(kid, pub); err != nil {
		t.Fatal(err)
	}
	uri := "coap://[" + sim.NodeAddr(sim.DefaultPrefix, 0).String() + "]/signed/temp"
	var counters []uint64
	for len(counters) < 2 {
		select {
		case m := <-got:
			payload, meta, err := v.Verify(m.payload, signed.Expectation{URI: uri, ContentFormat: 0})
			if err != nil {
				t.Fatalf("MQTT message %x does not verify: %v", m.payload, err)
			}
			if !simReadingRE.Match(payload) || m.cf != "18" {
				t.Fatalf("signed payload %q, coap-cf %q", payload, m.cf)
			}
			counters = append(counters, meta.Counter)
		case <-ctx.Done():
			t.Fatalf("%d signed readings over MQTT before the deadline\n%s", len(counters), b.Log())
		}
	}
	t.Logf("up: %d signed representations verified, counters %v", len(counters), counters)
	// The plugin observes through gatewayd's hub (Host.Observe), and the
	// metrics say so.
	if m := scrape(t, admin); !regexp.MustCompile(`gatewayd_plugin_observations_total\{plugin="mqtt"\} [1-9]`).MatchString(m) {
		t.Fatalf("no observation by the plugin in the metrics:\n%s", grepLines(m, "gatewayd_plugin"))
	}
	// And with mosquitto's own client: the retained message, raw (-N),
	// is the signed representation byte for byte.
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	raw, err := exec.CommandContext(sctx, tool(t, "mosquitto_sub"), "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port),
		"-t", "gw/node1/temp", "-C", "1", "-N").Output()
	scancel()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	if payload, _, err := v.Verify(raw, signed.Expectation{URI: uri, ContentFormat: 0}); err != nil && !errors.Is(err, signed.ErrStale) {
		t.Fatalf("mosquitto_sub's message %x does not verify: %v", raw, err)
	} else if err == nil && !simReadingRE.Match(payload) {
		t.Fatalf("mosquitto_sub's payload %q", payload)
	}

	// Down: mosquitto_pub → plugin → PUT through gatewayd → topic-data.
	c := coapEndpoint(t)
	data := createTopic(t, c, gw, "readings", "/ps/data/readings", 42)
	if data != "/ps/data/readings" && data != "ps/data/readings" {
		t.Fatalf("topic-data %q", data)
	}
	mpub := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, tool(t, "mosquitto_pub"), append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-q", "1", "-t", "gw/in/readings"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	get := func() *coap.Message {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		resp, err := c.Do(rctx, gw, &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(data)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// The first publication makes the topic fully created; until then a
	// subscription would get 4.04.
	mpub("-m", "first")
	until(t, 30*time.Second, "topic-data after mosquitto_pub", func() error {
		if resp := get(); resp.Code != coap.Content || string(resp.Payload) != "first" {
			return fmt.Errorf("%v %q\n%s", resp.Code, resp.Payload, log.String())
		}
		return nil
	})
	notes := make(chan []byte, 16)
	first, obs, err := c.Observe(ctx, gw, &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(data)}, func(m *coap.Message) {
		notes <- bytes.Clone(m.Payload)
	})
	if err != nil || obs == nil {
		t.Fatalf("subscribe: %v %v", first, err)
	}
	defer obs.Cancel(context.Background())
	// Binary, with NUL, 0xff and CR LF: mosquitto_pub -f sends a file as is.
	blob := []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0x00, 0xff, 0x0d, 0x0a, 0x00, 0x7f, 0x80}
	file := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(file, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	mpub("-f", file)
	for {
		select {
		case n := <-notes:
			if bytes.Equal(n, []byte("first")) {
				continue // a notification of the state before
			}
			if !bytes.Equal(n, blob) {
				t.Fatalf("CoAP subscriber got %x, want %x", n, blob)
			}
			return
		case <-ctx.Done():
			t.Fatal("the CoAP subscriber got no notification of the MQTT message")
		}
	}
}

// Restarting mosquitto mid-stream loses no acknowledged message, MQTT to
// CoAP. "Acknowledged" is end to end across the bridge: a message counts
// once mosquitto has sent its PUBACK to the publisher. From then on it is
// mosquitto's (kept in the plugin's persistent session, saved across the
// SIGTERM by persistence), and the plugin acknowledges a message to
// mosquitto only after gatewayd answered its PUT, so every acknowledged
// message must reach the CoAP origin the mapping PUTs to, in publication
// order. The publisher retries a message until it is acknowledged, so
// every number is acknowledged in the end; a retried one may arrive twice
// (QoS 1 is at least once), and duplicates are allowed, reordering is not.
func TestMQTTPluginLosesNoAcknowledgedMessageWhenMosquittoRestarts(t *testing.T) {
	b, _, _, _, log, rec, _ := mqttGatewayRecording(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	// arrivedNumbers is what the CoAP origin received, as numbers. The
	// origin records every PUT (a pub-sub subscriber, latest-wins, could
	// legitimately skip states and is not the measure of loss).
	arrivedNumbers := func() []int {
		var ns []int
		for _, p := range rec.payloads() {
			if n, err := strconv.Atoi(string(p)); err == nil {
				ns = append(ns, n)
			}
		}
		return ns
	}

	// First the bridge must be subscribed: mosquitto acknowledges a
	// publication that no one subscribes to, and drops it, as MQTT says.
	defer func() {
		if t.Failed() {
			t.Logf("gatewayd warnings:\n%s", warnings(log.String()))
		}
	}()
	testutil.EventuallyWithin(t, 20*time.Second, "the bridge to deliver the warm-up message", func() bool {
		if slices.Contains(arrivedNumbers(), -1) {
			return true
		}
		out, err := exec.Command(tool(t, "mosquitto_pub"), "-V", "mqttv5", "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-q", "1", "-t", "gw/in/log", "-m", "-1").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		// A delivery takes a PUT: wait for the next one (or a while,
		// for a publication that found no subscriber yet).
		select {
		case <-rec.put:
		case <-time.After(200 * time.Millisecond):
		}
		return slices.Contains(arrivedNumbers(), -1)
	})

	// The publisher: numbers 0..total-1, each until its PUBACK came, over
	// a connection made again whenever mosquitto goes away.
	const total = 60
	var (
		acked    []int
		attempts int
		cli      *paho.Client
	)
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		// Mid-stream: after about a third has arrived.
		for len(arrivedNumbers()) < total/3+1 && ctx.Err() == nil {
			select {
			case <-rec.put:
			case <-ctx.Done():
			}
		}
		b.Stop()
		time.Sleep(300 * time.Millisecond)
		b.Start()
	}()
	for n := 0; n < total; {
		if ctx.Err() != nil {
			t.Fatalf("publisher: %d of %d acknowledged before the deadline\n%s", len(acked), total, warnings(log.String()))
		}
		if cli == nil {
			var err error
			if cli, err = mqttConnect(ctx, b.Addr(), "e2e-pub", nil); err != nil {
				// mosquitto is down: try again once it is back (Start
				// returns when it listens).
				select {
				case <-restarted:
				case <-ctx.Done():
				}
				continue
			}
		}
		attempts++
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cli.Publish(pctx, &paho.Publish{QoS: 1, Topic: "gw/in/log", Payload: []byte(strconv.Itoa(n))})
		pcancel()
		if err != nil {
			mqttClose(cli)
			cli = nil
			continue
		}
		acked = append(acked, n)
		n++
		time.Sleep(20 * time.Millisecond)
	}
	mqttClose(cli)
	<-restarted

	// Every acknowledged number reaches the origin, first occurrences in
	// order (QoS 1 may deliver some twice).
	var seen []int
	defer func() {
		if t.Failed() {
			t.Logf("origin saw %v\nmosquitto log:\n%s", seen, b.Log())
		}
	}()
	testutil.EventuallyWithin(t, 30*time.Second, fmt.Sprintf("the last number, %d, at the origin", total-1), func() bool {
		seen = arrivedNumbers()
		return slices.Contains(seen, total-1)
	})
	var firsts []int
	dups := 0
	for _, n := range seen {
		if slices.Contains(firsts, n) {
			dups++
			continue
		}
		firsts = append(firsts, n)
	}
	if !slices.IsSorted(firsts) {
		t.Errorf("the origin got them out of order: %v", seen)
	}
	var missing []int
	for _, n := range acked {
		if !slices.Contains(firsts, n) {
			missing = append(missing, n)
		}
	}
	t.Logf("published %d numbers in %d attempts, %d acknowledged; the origin got %d PUTs, %d distinct, %d duplicates",
		total, attempts, len(acked), len(seen), len(firsts), dups)
	if len(missing) > 0 {
		t.Fatalf("acknowledged but never delivered: %v\norigin saw %v\nmosquitto log:\n%s\ngatewayd warnings:\n%s", missing, seen, b.Log(), warnings(log.String()))
	}
}

// pluginPIDs are the live processes whose parent is ppid and whose argv[0]
// is path (plugins run from /proc/self/fd/N keep their path in argv[0]).
func pluginPIDs(t *testing.T, ppid int, path string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, parent, ok := procStat(pid)
		if !ok || parent != ppid || state == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if argv0, _, _ := bytes.Cut(cmdline, []byte{0}); string(argv0) == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat reads a process's state and parent from /proc/PID/stat.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// gone reports whether pid no longer runs: no such process, or a zombie
// (PID 1 in a container may never reap it).
func gone(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == "Z"
}

// The real binary: a plugin killed with SIGKILL is running again within
// 2 s, and CoAP requests to radio nodes are served meanwhile; gatewayd
// killed with SIGKILL leaves no plugin process behind (Pdeathsig).
func TestBinaryRestartsKilledPluginAndLeavesNoneWhenKilled(t *testing.T) {
	bin, sum := testpeer.BuildPlugin(t, "github.com/opaque-edge/gatewayd/plugins/httpcoap/cmd/gatewayd-http")
	proxy, httpPort := freePort(t), freeTCPPort(t)
	g := startGatewayd(t, httpPluginConfig(proxy, "", bin, sum, httpPort, ""), asBinary())
	gwPID := g.pid()
	pids := pluginPIDs(t, gwPID, bin)
	if len(pids) != 1 {
		t.Fatalf("plugin processes %v, want one", pids)
	}
	first := pids[0]

	c := coapEndpoint(t)
	gw := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(proxy))
	node := "coap://[" + sim.NodeAddr(sim.DefaultPrefix, 0).String() + "]/sensors/temp"
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
		req.Options = req.Options.Insert(coap.ProxyURI, []byte(node))
		resp, err := c.Do(ctx, gw, req)
		if err != nil {
			return err
		}
		if resp.Code != coap.Content || !simReadingRE.Match(resp.Payload) {
			return fmt.Errorf("%v %q", resp.Code, resp.Payload)
		}
		return nil
	}
	// The sim radio comes up shortly after gatewayd reports it started.
	until(t, 15*time.Second, "GET before the kill", get)

	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Served while the plugin is down or coming back.
	if err := get(); err != nil {
		t.Fatalf("GET during the plugin's restart: %v", err)
	}
	var second int
	// The restart within 2 s of the kill is what is shown: the bound is
	// the assertion, not a guess at how long to wait.
	testutil.EventuallyWithin(t, 2*time.Second-time.Since(killed), "a new plugin process within 2 s of the kill", func() bool {
		if p := pluginPIDs(t, gwPID, bin); len(p) == 1 && p[0] != first {
			second = p[0]
		}
		return second != 0
	})
	t.Logf("plugin pid %d killed, pid %d running %v later", first, second, time.Since(killed).Round(time.Millisecond))
	// The restarted front end serves HTTP again.
	url := fmt.Sprintf("http://127.0.0.1:%d/hc/%s", httpPort, node)
	until(t, 10*time.Second, "HTTP front end after the restart", func() error {
		out, err := exec.Command(tool(t, "curl"), "-sS", "--max-time", "10", "-g", "--path-as-is", url).CombinedOutput()
		if err == nil && !simReadingRE.Match(bytes.TrimSpace(out)) {
			err = fmt.Errorf("%q", out)
		}
		return err
	})

	g.signal(t, syscall.SIGKILL)
	g.wait(t, startTimeout)
	testutil.EventuallyWithin(t, 5*time.Second, fmt.Sprintf("plugin pid %d to end with gatewayd (Pdeathsig)", second), func() bool { return gone(second) })
}

// scrape returns the admin endpoint's /metrics.
func scrape(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
