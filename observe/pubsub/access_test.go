package pubsub

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

var (
	adminPeer    = netip.MustParseAddrPort("[2001:db8::1]:5683")
	outsiderPeer = netip.MustParseAddrPort("[2001:db8:ff::9]:5683")
)

// accessConfig lets 2001:db8::/48 and the identity psk:ops administer;
// 2001:db8:ff::9 is outside both.
func accessConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.Admins = []string{"2001:db8::/48", "psk:ops"}
	return cfg
}

func wantForbidden(t *testing.T, what string, got *coap.Message, diag string) {
	t.Helper()
	wantCode(t, what, got, coap.Forbidden)
	if !strings.Contains(string(got.Payload), diag) {
		t.Fatalf("%s: diagnostic %q, want it to say %q", what, got.Payload, diag)
	}
}

// Creating, reconfiguring and deleting topics is for admins (draft
// §2.4.3, §2.5.3–§2.5.5, §5); a client that is not one gets 4.03 with a
// diagnostic and changes nothing, but may discover, read configurations,
// publish and subscribe, as every client may by default.
func TestOnlyAdminsCreateChangeAndDeleteTopics(t *testing.T) {
	r := openRig(t, accessConfig(t))
	tp, dp := r.create(sensor("admins-topic"))

	r.peer = outsiderPeer
	wantForbidden(t, "outsider creates", r.req(coap.POST, "/ps", enc(t, sensor("squat")), coap.ContentFormat, testCF), "only admins")
	wantForbidden(t, "outsider replaces the configuration", r.req(coap.POST, tp, enc(t, map[int]any{KeyMaxSubscribers: 1}), coap.ContentFormat, testCF), "only admins")
	wantForbidden(t, "outsider patches the configuration", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyTopicType: "x"}), coap.ContentFormat, testCF), "only admins")
	wantForbidden(t, "outsider deletes the topic", r.req(coap.DELETE, tp, nil), "only admins")
	wantForbidden(t, "outsider deletes a topic that does not exist", r.req(coap.DELETE, "/ps/nonexistent", nil), "only admins")
	if st := r.b.Stats(); st.Topics != 1 {
		t.Fatalf("topics after refused requests: %d", st.Topics)
	}
	if m := dec(t, r.req(coap.GET, tp, nil).Payload); m[KeyTopicType] != nil || m[KeyMaxSubscribers] != nil {
		t.Fatalf("configuration changed by an outsider: %v", m)
	}
	wantCode(t, "outsider discovers", r.req(coap.GET, "/ps", nil), coap.Content)
	wantCode(t, "outsider reads the configuration", r.req(coap.GET, tp, nil), coap.Content)
	wantCode(t, "outsider publishes", r.publish(dp, 0, []byte("1")), coap.Created)
	u := &coaptest.Observer{}
	if resp := r.subscribe(dp, u); resp.Code != coap.Content || !resp.Options.Has(coap.Observe) {
		t.Fatalf("outsider subscribes: %v %s", resp.Code, resp.Payload)
	}
	wantCode(t, "outsider deletes topic-data", r.req(coap.DELETE, dp, nil), coap.Deleted)

	// A listed DTLS identity administers from any address; another
	// identity from the same address does not.
	r.identity = "psk:other"
	wantForbidden(t, "unlisted identity creates", r.req(coap.POST, "/ps", enc(t, sensor("by-other")), coap.ContentFormat, testCF), "psk:other")
	r.identity = "psk:ops"
	r.create(sensor("by-ops"))
	wantCode(t, "listed identity deletes", r.req(coap.DELETE, tp, nil), coap.Deleted)
}

// admins = [] leaves the topics as they are: no one creates or deletes.
func TestEmptyAdminsAllowsNoOne(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admins = []string{}
	r := openRig(t, cfg)
	wantForbidden(t, "create", r.req(coap.POST, "/ps", enc(t, sensor("x")), coap.ContentFormat, testCF), "only admins")
}

// publishers and subscribers, when set, are the only clients that may
// publish (and delete topic-data, §3.2.4) and read or subscribe.
func TestPublishersAndSubscribersLists(t *testing.T) {
	cfg := accessConfig(t)
	cfg.Publishers = []string{"2001:db8::/48"}
	cfg.Subscribers = []string{"cn:dashboard"}
	r := openRig(t, cfg)
	_, dp := r.create(sensor("t"))
	wantCode(t, "publisher publishes", r.publish(dp, 0, []byte("1")), coap.Created)
	wantForbidden(t, "publisher reads without being a subscriber", r.req(coap.GET, dp, nil), "only subscribers")

	r.peer = outsiderPeer
	wantForbidden(t, "outsider publishes", r.publish(dp, 0, []byte("2")), "only publishers")
	wantForbidden(t, "outsider deletes topic-data", r.req(coap.DELETE, dp, nil), "only publishers")
	u := &coaptest.Observer{}
	wantForbidden(t, "outsider subscribes", r.subscribe(dp, u), "only subscribers")
	if u.Starts() != 0 {
		t.Fatal("a refused subscriber was registered")
	}
	r.identity = "cn:dashboard"
	if got := r.req(coap.GET, dp, nil); got.Code != coap.Content || string(got.Payload) != "1" {
		t.Fatalf("listed subscriber reads: %v %q", got.Code, got.Payload)
	}
	if resp := r.subscribe(dp, u); !resp.Options.Has(coap.Observe) || u.Starts() != 1 {
		t.Fatalf("listed subscriber subscribes: %v", resp.Code)
	}
}

// Gate applies the lists before the next stage (the Observe hub in the
// proxy's chain) sees the request, and passes what they allow.
func TestGateRefusesBeforeTheNextStage(t *testing.T) {
	cfg := accessConfig(t)
	cfg.Subscribers = []string{"2001:db8::/48"}
	r := openRig(t, cfg)
	_, dp := r.create(sensor("t"))
	passed := 0
	gate := r.b.Gate(coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, req *coap.Request) error {
		passed++
		return w.WriteResponse(&coap.Message{Code: coap.Content})
	}))
	serve := func(peer netip.AddrPort, m *coap.Message) *coap.Message {
		rec := coaptest.Serve(t, gate, &coap.Request{Msg: m, Peer: peer})
		if err := rec.Err(); err != nil {
			t.Fatal(err)
		}
		return rec.Msg()
	}
	wantForbidden(t, "outsider subscribes", serve(outsiderPeer, msg(coap.GET, dp, nil, coap.Observe, 0)), "only subscribers")
	wantForbidden(t, "outsider creates", serve(outsiderPeer, msg(coap.POST, "/ps", enc(t, sensor("y")), coap.ContentFormat, testCF)), "only admins")
	if passed != 0 {
		t.Fatalf("%d refused requests reached the next stage", passed)
	}
	wantCode(t, "subscriber", serve(adminPeer, msg(coap.GET, dp, nil, coap.Observe, 0)), coap.Content)
	wantCode(t, "outsider discovers", serve(outsiderPeer, msg(coap.GET, "/ps", nil)), coap.Content)
	wantCode(t, "not the broker's", serve(outsiderPeer, msg(coap.POST, "/other", nil)), coap.Content)
	if passed != 3 {
		t.Fatalf("%d allowed requests reached the next stage, want 3", passed)
	}
}

// max_topics_per_client: a client (IPv6 by /64, an identity by itself)
// that has created its share gets 4.03 until it deletes one; others go on.
func TestPerClientTopicQuota(t *testing.T) {
	cfg := accessConfig(t)
	cfg.Admins = append(cfg.Admins, "fd00:db8:1::/64")
	cfg.MaxTopicsPerClient = 2
	r := openRig(t, cfg, WithRadioPrefixes([]netip.Prefix{netip.MustParsePrefix("fd00:db8:1::/64")}))
	create := func(name string) *coap.Message {
		return r.req(coap.POST, "/ps", enc(t, sensor(name)), coap.ContentFormat, testCF)
	}
	tp, _ := r.create(sensor("a1"))
	r.peer = netip.MustParseAddrPort("[2001:db8::77]:1234") // the same /64
	r.create(sensor("a2"))
	wantForbidden(t, "third topic of one /64", create("a3"), "max_topics_per_client")
	r.peer = netip.MustParseAddrPort("[2001:db8:0:1::1]:5683") // the next /64
	r.create(sensor("b1"))
	r.identity = "psk:ops" // an identity is its own client, wherever it is
	r.create(sensor("ops1"))
	r.create(sensor("ops2"))
	wantForbidden(t, "third topic of an identity", create("ops3"), "psk:ops")
	r.identity = ""
	// Radio nodes share a /64 but each has its own address.
	for i, node := range []string{"[fd00:db8:1::1]:5683", "[fd00:db8:1::2]:5683"} {
		r.peer = netip.MustParseAddrPort(node)
		r.create(sensor("node" + string(rune('a'+i)) + "1"))
		r.create(sensor("node" + string(rune('a'+i)) + "2"))
		wantForbidden(t, "third topic of "+node, create("node3"), "max_topics_per_client")
	}
	r.peer = adminPeer
	wantCode(t, "delete one", r.req(coap.DELETE, tp, nil), coap.Deleted)
	r.create(sensor("a3"))
	wantForbidden(t, "over the quota again", create("a4"), "max_topics_per_client")
}

// The creator is stored with the topic, so a restart does not give a
// client a fresh quota; a state file from before creators were stored
// loads, and its topic is charged to no one.
func TestTopicQuotaSurvivesRestart(t *testing.T) {
	cfg := accessConfig(t)
	cfg.MaxTopicsPerClient = 1
	r := openRig(t, cfg)
	r.create(sensor("mine"))
	r.b.Close()

	// A topic of the older format: the keys 0–7 and nothing else.
	old := enc(t, map[int]any{0: recordVersion, 1: "0ld0ld00", 2: enc(t, map[int]any{KeyTopicName: "legacy", KeyTopicData: "/ps/data/legacy", KeyResourceType: RTData}), 3: false, 4: false, 5: 0, 6: []byte(nil), 7: 0})
	if rec, err := decodeRecord(old); err != nil || rec.Creator != "" {
		t.Fatalf("older record: %v %+v", err, rec)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, stateFiles.Prefix+"0ld0ld00"+stateFiles.Suffix), old, 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := openRig(t, cfg)
	if st := r2.b.Stats(); st.Topics != 2 || st.BadStateFiles != 0 {
		t.Fatalf("after restart: %+v", st)
	}
	wantCode(t, "the older topic", r2.req(coap.GET, "/ps/0ld0ld00", nil), coap.Content)
	wantForbidden(t, "second topic after a restart", r2.req(coap.POST, "/ps", enc(t, sensor("again")), coap.ContentFormat, testCF), "max_topics_per_client")
	r2.peer = netip.MustParseAddrPort("[2001:db8:0:2::1]:5683")
	r2.create(sensor("theirs")) // the older topic counts against no one
	wantCode(t, "an admin deletes the older topic", r2.req(coap.DELETE, "/ps/0ld0ld00", nil), coap.Deleted)
}

// Names a client picks are bounded by max_name_length (4.00, draft
// §2.4.3: an invalid parameter); topic-type on a later change too.
func TestLongNamesAreRefused(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxNameLength = 16 })
	long := strings.Repeat("n", 17)
	for _, c := range []struct {
		name  string
		props map[int]any
		key   string
	}{
		{"topic-name", map[int]any{KeyTopicName: long, KeyResourceType: RTData}, "topic-name"},
		{"resource-type", map[int]any{KeyTopicName: "n", KeyResourceType: long}, "resource-type"},
		{"topic-type", map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicType: long}, "topic-type"},
		{"topic-data", map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicData: "/ps/data/" + long}, "topic-data"},
	} {
		got := r.req(coap.POST, "/ps", enc(t, c.props), coap.ContentFormat, testCF)
		wantCode(t, c.name, got, coap.BadRequest)
		if !strings.Contains(string(got.Payload), c.key) || !strings.Contains(string(got.Payload), "max_name_length") {
			t.Errorf("%s: diagnostic %q", c.name, got.Payload)
		}
	}
	if st := r.b.Stats(); st.Topics != 0 {
		t.Fatalf("%d topics made of long names", st.Topics)
	}
	tp, _ := r.create(map[int]any{KeyTopicName: strings.Repeat("n", 16), KeyResourceType: RTData, KeyTopicType: "t"})
	wantCode(t, "a long topic-type by iPATCH", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyTopicType: long}), coap.ContentFormat, testCF), coap.BadRequest)
	wantCode(t, "a short one", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyTopicType: "u"}), coap.ContentFormat, testCF), coap.Changed)
}

func TestAccessConfigValidate(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"bad admin":         func(c *Config) { c.Admins = []string{"everyone"} },
		"bad publisher":     func(c *Config) { c.Publishers = []string{"10.0.0.1"} },
		"bad subscriber":    func(c *Config) { c.Subscribers = []string{"psk:"} },
		"zero quota":        func(c *Config) { c.MaxTopicsPerClient = 0 },
		"zero name length":  func(c *Config) { c.MaxNameLength = 0 },
		"names over 255":    func(c *Config) { c.MaxNameLength = 256 },
		"mapped prefix":     func(c *Config) { c.Admins = []string{"::ffff:10.0.0.0/104"} },
		"empty identity cn": func(c *Config) { c.Admins = []string{"cn:"} },
	} {
		c := testConfig(t)
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
