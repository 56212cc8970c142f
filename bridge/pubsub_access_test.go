package bridge

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// libcoapClient runs one of libcoap's clients (coap-client-notls, or
// coap-client-openssl for DTLS) to the end and returns what it printed:
// the payload, or the code and diagnostic of an error response.
func libcoapClient(t *testing.T, tool string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s (Debian libcoap3-bin) is needed: %v", tool, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, append([]string{"-B", "10"}, args...)...).CombinedOutput()
	return string(out)
}

// topicBody is a topic configuration (draft §2.2.1) as a request's payload.
func topicBody(t *testing.T, p pubsub.Properties) []byte {
	t.Helper()
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// topicFile writes a topic configuration for libcoap's -f.
func topicFile(t *testing.T, p pubsub.Properties) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "topic.cbor")
	if err := os.WriteFile(f, topicBody(t, p), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func sensorTopic(name, data string) pubsub.Properties {
	rt := pubsub.RTData
	p := pubsub.Properties{TopicName: &name, ResourceType: &rt}
	if data != "" {
		p.TopicData = &data
	}
	return p
}

func brokerConfig(t *testing.T, c *Config) {
	c.PubSub = pubsub.Defaults()
	c.PubSub.Enabled = true
	c.PubSub.StateDir = t.TempDir()
	c.PubSub.MinPublishInterval = pubsub.Duration{}
}

// topicPath is the topic resource of the only topic named in links.
func topicPath(t *testing.T, p *Proxy) string {
	t.Helper()
	for _, l := range p.Broker().Links() {
		if strings.Contains(l, pubsub.RTTopic+`"`) {
			return strings.TrimPrefix(strings.SplitN(l, ">", 2)[0], "<")
		}
	}
	t.Fatalf("no topic in %q", p.Broker().Links())
	return ""
}

// Through the whole chain, with libcoap's client: an admin (here
// 127.0.0.1 alone) creates a topic; a client the proxy admits but that is
// no admin gets 4.03 with a diagnostic on creating, reconfiguring and
// deleting it, and still publishes, reads and subscribes. The admin's
// quota ends in a 4.03 and a long name in a 4.00.
func TestPubSubAdminsThroughTheChainWithLibcoap(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		brokerConfig(t, c)
		c.PubSub.Admins = []string{"127.0.0.1/32"}
		c.PubSub.MaxTopicsPerClient = 2
	})
	base := "coap://" + p.Addrs()[0].String()
	admin := func(args ...string) string {
		return libcoapClient(t, "coap-client-notls", append([]string{"-a", "127.0.0.1"}, args...)...)
	}
	other := func(args ...string) string {
		return libcoapClient(t, "coap-client-notls", append([]string{"-a", testpeer.ClientAddr(7)}, args...)...)
	}
	kitchen := topicFile(t, sensorTopic("kitchen", "/ps/data/kitchen"))
	if out := admin("-m", "post", "-t", "65001", "-f", kitchen, base+"/ps"); strings.Contains(out, "4.") || p.Broker().Stats().Topics != 1 {
		t.Fatalf("the admin's POST: %q, %d topics", out, p.Broker().Stats().Topics)
	}
	tp := topicPath(t, p)
	patch := topicFile(t, pubsub.Properties{TopicType: new(string)})
	for _, c := range []struct {
		what string
		args []string
	}{
		{"create", []string{"-m", "post", "-t", "65001", "-f", topicFile(t, sensorTopic("squat", "")), base + "/ps"}},
		{"replace the configuration", []string{"-m", "post", "-t", "65001", "-f", patch, base + tp}},
		{"patch the configuration", []string{"-m", "ipatch", "-t", "65001", "-f", patch, base + tp}},
		{"delete the topic", []string{"-m", "delete", base + tp}},
	} {
		out := other(c.args...)
		if !strings.Contains(out, "4.03") || !strings.Contains(out, "only admins may create, change or delete topics") {
			t.Errorf("a client that is no admin tries to %s: %q", c.what, out)
		}
	}
	if st := p.Broker().Stats(); st.Topics != 1 {
		t.Fatalf("%d topics after the refused requests", st.Topics)
	}

	// Publishing and subscribing keep their own (empty: open) lists.
	if out := other("-m", "put", "-t", "0", "-e", "21.5", base+"/ps/data/kitchen"); strings.Contains(out, "4.") {
		t.Fatalf("publish by a client that is no admin: %q", out)
	}
	if out := other("-m", "get", base+"/ps/data/kitchen"); !strings.Contains(out, "21.5") {
		t.Fatalf("read by a client that is no admin: %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := testpeer.StartLibcoap(ctx, t, 8, "-s", "25", "-m", "get", base+"/ps/data/kitchen")
	waitFor(t, "the subscription", func() bool { return p.Broker().Stats().Subscriptions == 1 }, sub.Log)
	if out := admin("-m", "put", "-t", "0", "-e", "22.75", base+"/ps/data/kitchen"); strings.Contains(out, "4.") {
		t.Fatalf("publish: %q", out)
	}
	waitFor(t, "the notification", func() bool { return strings.Contains(sub.Log(), "22.75") }, sub.Log)
	cancel()

	// The admin's quota, and a name over max_name_length.
	if out := admin("-m", "post", "-t", "65001", "-f", topicFile(t, sensorTopic("hall", "")), base+"/ps"); strings.Contains(out, "4.") {
		t.Fatalf("the admin's second topic: %q", out)
	}
	if out := admin("-m", "post", "-t", "65001", "-f", topicFile(t, sensorTopic("attic", "")), base+"/ps"); !strings.Contains(out, "4.03") || !strings.Contains(out, "max_topics_per_client") {
		t.Fatalf("the admin's third topic, over max_topics_per_client 2: %q", out)
	}
	admin("-m", "delete", base+tp)
	long := topicFile(t, sensorTopic(strings.Repeat("k", 65), ""))
	if out := admin("-m", "post", "-t", "65001", "-f", long, base+"/ps"); !strings.Contains(out, "4.00") || !strings.Contains(out, "max_name_length") {
		t.Fatalf("a 65-byte topic-name: %q", out)
	}
	if st := p.Broker().Stats(); st.Topics != 1 {
		t.Fatalf("%d topics, want the admin's second alone", st.Topics)
	}
}

// waitFor polls cond until it holds, failing the test with what's log
// after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool, log func() string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("client log:\n%s", log())
		}
	}()
	testutil.EventuallyWithin(t, 20*time.Second, what, cond)
}

// publishers and subscribers, when set, refuse everyone else with 4.03,
// libcoap's client included; a subscriber that is not listed cannot join
// an observation the hub already holds for a listed one, which never
// reaches the broker's own stage.
func TestPubSubPublishersAndSubscribersThroughTheChain(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		brokerConfig(t, c)
		c.PubSub.Publishers = []string{"127.0.0.1/32"}
		c.PubSub.Subscribers = []string{"127.0.0.1/32"}
	})
	base := "coap://" + p.Addrs()[0].String()
	c := client(t) // 127.0.0.1: admin, publisher and subscriber
	create := &coap.Message{Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: topicBody(t, sensorTopic("door", "/ps/data/door"))}
	if resp := do(t, c, p, create); resp.Code != coap.Created {
		t.Fatalf("create: %v %s", resp.Code, resp.Payload)
	}
	if resp := do(t, c, p, &coap.Message{Code: coap.PUT, Options: pathOpts("ps/data/door"), Payload: []byte("open")}); resp.Code != coap.Created {
		t.Fatalf("publish: %v %s", resp.Code, resp.Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// With the Uri-Port libcoap sends, so that its registration below
	// names the same resource for the hub: the cache key.
	obs := &coap.Message{Code: coap.GET, Options: pathOpts("ps/data/door").SetUint(coap.URIPort, uint32(p.Addrs()[0].Port()))}
	first, o, err := c.Observe(ctx, p.Addrs()[0], obs, func(*coap.Message) {})
	if err != nil || o == nil || first.Code != coap.Content {
		t.Fatalf("a listed subscriber: %v %v", first, err)
	}
	if st := p.Hub().Stats(); st.Observers != 1 {
		t.Fatalf("hub %+v, want the listed subscriber's observation", st)
	}

	other := func(args ...string) string {
		return libcoapClient(t, "coap-client-notls", append([]string{"-a", testpeer.ClientAddr(3)}, args...)...)
	}
	for _, c := range []struct {
		what, diag string
		args       []string
	}{
		{"publish", "only publishers", []string{"-m", "put", "-e", "closed", base + "/ps/data/door"}},
		{"delete topic-data", "only publishers", []string{"-m", "delete", base + "/ps/data/door"}},
		{"read", "only subscribers", []string{"-m", "get", base + "/ps/data/door"}},
		{"join the observation", "only subscribers", []string{"-s", "2", "-m", "get", base + "/ps/data/door"}},
	} {
		if out := other(c.args...); !strings.Contains(out, "4.03") || !strings.Contains(out, c.diag) || strings.Contains(out, "open") {
			t.Errorf("an unlisted client tries to %s: %q", c.what, out)
		}
	}
	if st := p.Hub().Stats(); st.Observers != 1 {
		t.Fatalf("hub %+v: an unlisted subscriber joined", st)
	}
	if got := do(t, c, p, &coap.Message{Code: coap.GET, Options: pathOpts("ps/data/door")}); string(got.Payload) != "open" {
		t.Fatalf("topic-data after refused requests: %v %q", got.Code, got.Payload)
	}
}

// A Proxy-Uri naming the proxy's own address brings the request back to
// the broker from the upstream socket, on loopback: that must not make a
// client that is no admin one.
func TestPubSubRequestForwardedToItselfIsNoAdmin(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		brokerConfig(t, c)
		c.PubSub.Admins = []string{"loopback"}
		c.Proxy.Clients = []string{"127.0.0.0/8"}
	})
	// The proxy's own listener is an allowed target (loopback), so the
	// request is forwarded, and the broker sees it from 127.0.0.1.
	out := libcoapClient(t, "coap-client-notls", "-a", testpeer.ClientAddr(4), "-m", "post", "-t", "65001",
		"-f", topicFile(t, sensorTopic("via-self", "")), "-P", "coap://"+p.Addrs()[0].String(),
		"coap://"+p.Addrs()[0].String()+"/ps")
	if !strings.Contains(out, "4.03") || !strings.Contains(out, "unknown client") {
		t.Fatalf("a POST to the broker through the proxy itself: %q", out)
	}
	if st := p.Broker().Stats(); st.Topics != 0 {
		t.Fatalf("%d topics created through the proxy itself", st.Topics)
	}
}

// DTLS identities as admins, with libcoap's OpenSSL client: a listed PSK
// identity creates a topic; another identity, and plain UDP from the same
// loopback address, get 4.03; a client certificate's common name works
// as its identity.
func TestPubSubDTLSIdentitiesAsAdmins(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "psk")
	if err := os.WriteFile(psk, []byte("ops:ops-key-0123\nguest:guest-key-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	leaf := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	caCert, caKey := testpeer.Issue(t, dir, "ca", ca("test CA"), nil, nil)
	selfSigned(t, dir, "server")
	testpeer.Issue(t, dir, "console", leaf(2, "console"), caCert, caKey)
	testpeer.Issue(t, dir, "kiosk", leaf(3, "kiosk"), caCert, caKey)
	udp, dtls := freePort(t), freePort(t)
	p := startProxy(t, func(c *Config) {
		brokerConfig(t, c)
		c.PubSub.Admins = []string{"psk:ops", "cn:console"}
		c.Proxy.Listen = []string{"udp://" + udp, "dtls://" + dtls}
		c.Proxy.PSKFile = psk
		c.Proxy.CertFile, c.Proxy.KeyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
		c.Proxy.ClientCAFile = filepath.Join(dir, "ca.pem")
	})
	post := func(name string, args ...string) string {
		return libcoapClient(t, "coap-client-openssl", append(args, "-m", "post", "-t", "65001",
			"-f", topicFile(t, sensorTopic(name, "")), "coaps://"+dtls+"/ps")...)
	}
	if out := post("by-ops", "-u", "ops", "-k", "ops-key-0123"); strings.Contains(out, "4.") || p.Broker().Stats().Topics != 1 {
		t.Fatalf("psk:ops creates: %q (%d topics)", out, p.Broker().Stats().Topics)
	}
	if out := post("by-guest", "-u", "guest", "-k", "guest-key-0123"); !strings.Contains(out, "4.03") || !strings.Contains(out, "psk:guest") {
		t.Fatalf("psk:guest creates: %q", out)
	}
	if out := post("by-console", "-c", filepath.Join(dir, "console.pem"), "-j", filepath.Join(dir, "console.key")); strings.Contains(out, "4.") || p.Broker().Stats().Topics != 2 {
		t.Fatalf("cn:console creates: %q (%d topics)", out, p.Broker().Stats().Topics)
	}
	if out := post("by-kiosk", "-c", filepath.Join(dir, "kiosk.pem"), "-j", filepath.Join(dir, "kiosk.key")); !strings.Contains(out, "4.03") || !strings.Contains(out, "cn:kiosk") {
		t.Fatalf("cn:kiosk creates: %q", out)
	}
	out := libcoapClient(t, "coap-client-notls", "-m", "post", "-t", "65001", "-f", topicFile(t, sensorTopic("by-udp", "")), "coap://"+udp+"/ps")
	if !strings.Contains(out, "4.03") {
		t.Fatalf("loopback over UDP, not listed: %q", out)
	}
	if st := p.Broker().Stats(); st.Topics != 2 {
		t.Fatalf("%d topics, want those of psk:ops and cn:console", st.Topics)
	}
}

// The default admins, "loopback" and "radio": a node of the simulated
// radio creates a topic over the radio (as the demo's first node does),
// while a client on loopback but outside admins = ["radio"] may not.
func TestPubSubRadioNodesAreAdminsByDefault(t *testing.T) {
	p := startProxy(t, func(c *Config) {
		brokerConfig(t, c)
		c.PubSub.Admins = []string{"radio"}
		c.Proxy.Timeout = Duration{10 * time.Second}
		c.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
	})
	if d := pubsub.Defaults().Admins; len(d) != 2 || d[0] != "loopback" || d[1] != "radio" {
		t.Fatalf("default admins %q", d)
	}
	r := p.Radios()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitUp(ctx); err != nil {
		t.Fatalf("sim radio did not come up: %v", err)
	}
	n, ok := sim.FromLink(r.Link())
	if !ok {
		t.Fatal("not a sim network")
	}
	node := n.SimNodes()[0]
	create := &coap.Message{Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: topicBody(t, sensorTopic("node-topic", ""))}
	// Over a radio a frame may be lost on a loaded machine: try again,
	// as the node would, until the answer comes.
	var resp *coap.Message
	for resp == nil && ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		resp, _ = node.Endpoint().Do(rctx, r.Conn().LocalAddr(), create)
		rcancel()
	}
	if resp == nil || resp.Code != coap.Created {
		t.Fatalf("node %v creates a topic over the radio: %v", node.Addr(), resp)
	}
	create.Payload = topicBody(t, sensorTopic("loopback-topic", ""))
	if got := do(t, client(t), p, create); got.Code != coap.Forbidden {
		t.Fatalf("loopback, not in admins = [\"radio\"]: %v %s", got.Code, got.Payload)
	}
}
