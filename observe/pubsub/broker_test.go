package pubsub

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

func sensor(name string) map[int]any {
	return map[int]any{KeyTopicName: name, KeyResourceType: RTData}
}

// §2.3.1–§2.3.3: what /.well-known/core lists, and its rt= queries.
func TestDiscoveryWellKnownLinksAnswerRTQueries(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(map[int]any{KeyTopicName: "room2", KeyResourceType: RTData, KeyTopicContentFormat: 60})
	links := r.b.Links()
	want := []string{
		`</ps>;rt="core.ps core.ps.coll";ct=40`,
		`<` + tp + `>;rt="core.ps.conf";ct=65001`,
		`<` + dp + `>;rt="core.ps.data";ct=60;obs`,
	}
	if !slices.Equal(links, want) {
		t.Fatalf("Links:\n got %q\nwant %q", links, want)
	}
	for _, c := range []struct{ q, want string }{
		{"rt=core.ps", want[0]},      // §2.3.1 broker discovery
		{"rt=core.ps.coll", want[0]}, // §2.3.2 collection discovery
		{"rt=core.ps.conf", want[1]}, // §2.3.3 topic discovery
		{"rt=core.ps.data", want[2]},
	} {
		got := FilterLinks(append([]string{`</route>;title="a;b"`}, links...), []string{c.q})
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("?%s: got %q, want %q", c.q, got, c.want)
		}
	}
	if got := FilterLinks(links, []string{"rt=core.ps*"}); len(got) != 3 {
		t.Errorf("rt=core.ps* should match all three, got %q", got)
	}
}

// §2.3.4: the collection answers ?rt=core.ps.data with the topic-data links.
func TestDiscoveryCollectionQueryListsTopicData(t *testing.T) {
	r := newRig(t, nil)
	_, d1 := r.create(sensor("a"))
	_, d2 := r.create(sensor("b"))
	resp := r.req(coap.GET, "/ps?rt=core.ps.data", nil)
	wantCode(t, "GET ?rt=core.ps.data", resp, coap.Content)
	if cf, _ := uintOpt(t, resp, coap.ContentFormat); cf != 40 {
		t.Fatalf("Content-Format %d, want 40", cf)
	}
	got := strings.Split(string(resp.Payload), ",")
	want := []string{"<" + d1 + ">", "<" + d2 + ">"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// §2.4.1: GET on the collection lists the topic resources in link format.
func TestCollectionGETListsTopics(t *testing.T) {
	r := newRig(t, nil)
	resp := r.req(coap.GET, "/ps", nil)
	wantCode(t, "empty collection", resp, coap.Content)
	if len(resp.Payload) != 0 {
		t.Fatalf("empty collection payload %q", resp.Payload)
	}
	t1, _ := r.create(sensor("a"))
	t2, _ := r.create(sensor("b"))
	resp = r.req(coap.GET, "/ps", nil)
	got := strings.Split(string(resp.Payload), ",")
	want := []string{"<" + t1 + ">", "<" + t2 + ">"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if resp := r.req(coap.GET, "/ps", nil, coap.Accept, 60); resp.Code != coap.NotAcceptable {
		t.Fatalf("Accept: 60 gave %v", resp.Code)
	}
}

// §2.4.2: FETCH with a topic filter returns the topics matching every
// property in it.
func TestCollectionFETCHFiltersByProperties(t *testing.T) {
	r := newRig(t, nil)
	tTemp, _ := r.create(map[int]any{KeyTopicName: "temperature", KeyResourceType: RTData, KeyTopicType: "temperature"})
	r.create(map[int]any{KeyTopicName: "humidity", KeyResourceType: RTData, KeyTopicType: "humidity"})
	filter := enc(t, map[int]any{KeyTopicName: "temperature", KeyResourceType: RTData})
	resp := r.req(coap.FETCH, "/ps", filter, coap.ContentFormat, testCF)
	wantCode(t, "FETCH", resp, coap.Content)
	if string(resp.Payload) != "<"+tTemp+">" {
		t.Fatalf("FETCH gave %q, want <%s>", resp.Payload, tTemp)
	}
	resp = r.req(coap.FETCH, "/ps", enc(t, map[int]any{KeyResourceType: RTData}), coap.ContentFormat, testCF)
	if n := len(strings.Split(string(resp.Payload), ",")); n != 2 {
		t.Fatalf("resource-type filter matched %d, want 2: %q", n, resp.Payload)
	}
	resp = r.req(coap.FETCH, "/ps", enc(t, map[int]any{KeyMaxSubscribers: 3}), coap.ContentFormat, testCF)
	if len(resp.Payload) != 0 {
		t.Fatalf("a property no topic has matched %q", resp.Payload)
	}
	wantCode(t, "FETCH without Content-Format", r.req(coap.FETCH, "/ps", filter), coap.UnsupportedContentFormat)
	wantCode(t, "FETCH bad CBOR", r.req(coap.FETCH, "/ps", []byte{0xa1}, coap.ContentFormat, testCF), coap.BadRequest)
}

// §2.4.3: POST creates a topic: 2.01, Location-Path of the topic resource,
// the representation with the required properties.
func TestCreateTopicReturnsLocationAndRepresentation(t *testing.T) {
	r := newRig(t, nil)
	resp := r.req(coap.POST, "/ps", enc(t, sensor("living-room-sensor")), coap.ContentFormat, testCF)
	wantCode(t, "create", resp, coap.Created)
	var loc []string
	for v := range resp.Options.All(coap.LocationPath) {
		loc = append(loc, string(v))
	}
	if len(loc) != 2 || loc[0] != "ps" || loc[1] == "data" {
		t.Fatalf("Location-Path %q", loc)
	}
	if cf, _ := uintOpt(t, resp, coap.ContentFormat); cf != testCF {
		t.Fatalf("Content-Format %d", cf)
	}
	m := dec(t, resp.Payload)
	if m[KeyTopicName] != "living-room-sensor" || m[KeyResourceType] != RTData {
		t.Fatalf("representation %v", m)
	}
	td, _ := m[KeyTopicData].(string)
	if !strings.HasPrefix(td, "/ps/data/") {
		t.Fatalf("topic-data %q", td)
	}
	// The topic is HALF CREATED: its data does not exist yet (§3).
	wantCode(t, "GET data of a new topic", r.req(coap.GET, td, nil), coap.NotFound)
	// A topic-data URI given by the creator is kept.
	resp = r.req(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "x", KeyResourceType: RTData, KeyTopicData: "/ps/data/mine"}), coap.ContentFormat, testCF)
	wantCode(t, "create with topic-data", resp, coap.Created)
	if got := dec(t, resp.Payload)[KeyTopicData]; got != "/ps/data/mine" {
		t.Fatalf("topic-data %v", got)
	}
}

// §2.4.3: invalid, unrecognized or duplicate requests get 4.xx.
func TestCreateTopicRejectsInvalidRequests(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxTopics = 3 })
	r.create(sensor("taken"))
	r.create(map[int]any{KeyTopicName: "t2", KeyResourceType: RTData, KeyTopicData: "/ps/data/used"})
	for _, c := range []struct {
		name    string
		payload []byte
		cf      int
		want    coap.Code
	}{
		{"no Content-Format", enc(t, sensor("a")), -1, coap.UnsupportedContentFormat},
		{"application/cbor", enc(t, sensor("a")), 60, coap.UnsupportedContentFormat},
		{"no topic-name", enc(t, map[int]any{KeyResourceType: RTData}), testCF, coap.BadRequest},
		{"no resource-type", enc(t, map[int]any{KeyTopicName: "a"}), testCF, coap.BadRequest},
		{"unknown property", enc(t, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, 99: 1}), testCF, coap.BadRequest},
		{"text keys", enc(t, map[string]any{"topic-name": "a", "resource-type": RTData}), testCF, coap.BadRequest},
		{"topic-name in use", enc(t, sensor("taken")), testCF, coap.BadRequest},
		{"topic-data in use", enc(t, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, KeyTopicData: "/ps/data/used"}), testCF, coap.BadRequest},
		{"topic-data elsewhere", enc(t, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, KeyTopicData: "coap://other/x"}), testCF, coap.BadRequest},
		{"initialize without topic-content-format", enc(t, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, KeyInitialize: []byte{0x80}}), testCF, coap.BadRequest},
		{"expired", enc(t, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, KeyExpirationDate: cbor.Tag{Number: 1, Content: 1680393599}}), testCF, coap.BadRequest},
		{"not a map", enc(t, []int{1}), testCF, coap.BadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			var resp *coap.Message
			if c.cf < 0 {
				resp = r.req(coap.POST, "/ps", c.payload)
			} else {
				resp = r.req(coap.POST, "/ps", c.payload, coap.ContentFormat, c.cf)
			}
			wantCode(t, c.name, resp, c.want)
		})
	}
	r.create(sensor("third"))
	wantCode(t, "over max_topics", r.req(coap.POST, "/ps", enc(t, sensor("fourth")), coap.ContentFormat, testCF), coap.Forbidden)
	if st := r.b.Stats(); st.Topics != 3 || st.Rejected == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// §2.4.3, §2.2.1 "initialize": the topic is created FULLY CREATED with
// the given representation, and can be subscribed to at once.
func TestCreateTopicWithInitializeIsFullyCreated(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "s", KeyResourceType: RTData, KeyTopicContentFormat: 112, KeyInitialize: []byte{0x80}})
	resp := r.req(coap.GET, dp, nil)
	wantCode(t, "GET initialized data", resp, coap.Content)
	if cf, _ := uintOpt(t, resp, coap.ContentFormat); cf != 112 || !bytes.Equal(resp.Payload, []byte{0x80}) {
		t.Fatalf("got cf %d payload %x", cf, resp.Payload)
	}
	// §3.2.1: a follow-up publication is a 2.04.
	wantCode(t, "publish after initialize", r.publish(dp, 112, []byte{0x81, 0x01}), coap.Changed)
}

// §2.5.1: GET on a topic returns its configuration.
func TestGetTopicReturnsConfiguration(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(map[int]any{
		KeyTopicName: "living-room-sensor", KeyResourceType: RTData, KeyTopicContentFormat: 112,
		KeyTopicType: "temperature", KeyExpirationDate: cbor.Tag{Number: 1, Content: 1893456000}, KeyMaxSubscribers: 100,
	})
	resp := r.req(coap.GET, tp, nil)
	wantCode(t, "GET topic", resp, coap.Content)
	if cf, _ := uintOpt(t, resp, coap.ContentFormat); cf != testCF {
		t.Fatalf("Content-Format %d", cf)
	}
	p, err := DecodeProperties(resp.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if *p.TopicName != "living-room-sensor" || *p.TopicData != dp || *p.TopicContentFormat != 112 || *p.TopicType != "temperature" ||
		*p.ExpirationDate != 1893456000 || *p.MaxSubscribers != 100 || *p.ObserverCheck != DefaultObserverCheck {
		t.Fatalf("representation %+v", dec(t, resp.Payload))
	}
	// The expiration date is tag 1 with an integer, as in the draft.
	if !bytes.Contains(resp.Payload, []byte{0x05, 0xc1, 0x1a}) {
		t.Fatalf("expiration-date not encoded as 1(uint): %x", resp.Payload)
	}
	wantCode(t, "GET unknown topic", r.req(coap.GET, "/ps/nothere", nil), coap.NotFound)
	wantCode(t, "GET Accept: 60", r.req(coap.GET, tp, nil, coap.Accept, 60), coap.NotAcceptable)
}

// §2.5.2: FETCH with an application/cbor array of keys returns those
// properties only.
func TestFetchTopicReturnsRequestedProperties(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 112})
	resp := r.req(coap.FETCH, tp, enc(t, []int{1, 3, 42}), coap.ContentFormat, 60)
	wantCode(t, "FETCH topic", resp, coap.Content)
	if cf, _ := uintOpt(t, resp, coap.ContentFormat); cf != testCF {
		t.Fatalf("Content-Format %d", cf)
	}
	m := dec(t, resp.Payload)
	if len(m) != 2 || m[KeyTopicData] != dp || m[KeyTopicContentFormat] != uint64(112) {
		t.Fatalf("FETCH gave %v", m)
	}
	wantCode(t, "FETCH with the pubsub format", r.req(coap.FETCH, tp, enc(t, []int{1}), coap.ContentFormat, testCF), coap.UnsupportedContentFormat)
	wantCode(t, "FETCH with a map", r.req(coap.FETCH, tp, enc(t, map[int]int{1: 1}), coap.ContentFormat, 60), coap.BadRequest)
	wantCode(t, "FETCH with text keys", r.req(coap.FETCH, tp, enc(t, []string{"a"}), coap.ContentFormat, 60), coap.BadRequest)
}

// §2.5.3: POST replaces the configuration; properties left out go back to
// their defaults; immutable properties cannot change.
func TestPostUpdateReplacesConfiguration(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicType: "temperature", KeyMaxSubscribers: 100, KeyObserverCheck: 60})
	resp := r.req(coap.POST, tp, enc(t, map[int]any{
		KeyTopicName: "n", KeyTopicData: dp, KeyResourceType: RTData, KeyTopicContentFormat: 112,
		KeyExpirationDate: cbor.Tag{Number: 1, Content: 1893456000},
	}), coap.ContentFormat, testCF)
	wantCode(t, "POST update", resp, coap.Changed)
	m := dec(t, resp.Payload)
	if m[KeyTopicContentFormat] != uint64(112) || m[KeyTopicType] != nil || m[KeyMaxSubscribers] != nil || m[KeyObserverCheck] != uint64(DefaultObserverCheck) {
		t.Fatalf("after POST: %v", m)
	}
	// Only what changes is needed: immutables may be left out.
	wantCode(t, "POST without immutables", r.req(coap.POST, tp, enc(t, map[int]any{KeyTopicType: "x"}), coap.ContentFormat, testCF), coap.Changed)
	for _, c := range []struct {
		name string
		p    map[int]any
	}{
		{"rename", map[int]any{KeyTopicName: "other"}},
		{"move data", map[int]any{KeyTopicData: "/ps/data/zzz"}},
		{"change rt", map[int]any{KeyResourceType: "x"}},
	} {
		wantCode(t, c.name, r.req(coap.POST, tp, enc(t, c.p), coap.ContentFormat, testCF), coap.BadRequest)
	}
	if got := dec(t, r.req(coap.GET, tp, nil).Payload)[KeyTopicName]; got != "n" {
		t.Fatalf("topic-name became %v", got)
	}
}

// §2.5.4: iPATCH changes only the properties it names.
func TestIPatchUpdatesOnlyNamedProperties(t *testing.T) {
	r := newRig(t, nil)
	tp, _ := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 112, KeyTopicType: "temperature"})
	resp := r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyExpirationDate: cbor.Tag{Number: 1, Content: 1893456000}, KeyMaxSubscribers: 5}), coap.ContentFormat, testCF)
	wantCode(t, "iPATCH", resp, coap.Changed)
	m := dec(t, resp.Payload)
	if m[KeyTopicType] != "temperature" || m[KeyTopicContentFormat] != uint64(112) || m[KeyMaxSubscribers] != uint64(5) || m[KeyObserverCheck] != uint64(DefaultObserverCheck) {
		t.Fatalf("after iPATCH: %v", m)
	}
	wantCode(t, "iPATCH topic-name", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyTopicName: "x"}), coap.ContentFormat, testCF), coap.BadRequest)
	wantCode(t, "iPATCH observer-check 0", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyObserverCheck: 0}), coap.ContentFormat, testCF), coap.BadRequest)
	wantCode(t, "PATCH", r.req(coap.PATCH, tp, enc(t, map[int]any{KeyTopicType: "x"}), coap.ContentFormat, testCF), coap.MethodNotAllowed)
}

// §2.5.3, §2.5.4: lowering max-subscribers ends the newest subscriptions
// with a final 4.04.
func TestLoweringMaxSubscribersEndsNewestWith404(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(sensor("n"))
	r.publish(dp, 0, []byte("v1"))
	subs := []*coaptest.Observer{{}, {}, {}}
	for _, u := range subs {
		wantCode(t, "subscribe", r.subscribe(dp, u), coap.Content)
	}
	wantCode(t, "iPATCH", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyMaxSubscribers: 1}), coap.ContentFormat, testCF), coap.Changed)
	for i, u := range subs {
		n := u.Notifications()
		if i == 0 && len(n) != 0 {
			t.Fatalf("oldest subscription got %v", n)
		}
		if i > 0 && (len(n) != 1 || n[0].Code != coap.NotFound) {
			t.Fatalf("subscription %d got %v, want one 4.04", i, n)
		}
	}
	if st := r.b.Stats(); st.Subscriptions != 1 {
		t.Fatalf("subscriptions %d, want 1", st.Subscriptions)
	}
}

// §2.5.5: DELETE on a topic removes it and its topic-data; subscribers get
// a final 4.04; a repeated DELETE gets 4.04.
func TestDeleteTopicRemovesDataAndNotifies404(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(sensor("n"))
	r.publish(dp, 0, []byte("v1"))
	u := &coaptest.Observer{}
	r.subscribe(dp, u)
	wantCode(t, "DELETE topic", r.req(coap.DELETE, tp, nil), coap.Deleted)
	n := u.Notifications()
	if len(n) != 1 || n[0].Code != coap.NotFound || n[0].Options.Has(coap.Observe) {
		t.Fatalf("subscriber got %v, want a final 4.04", n)
	}
	wantCode(t, "GET topic after DELETE", r.req(coap.GET, tp, nil), coap.NotFound)
	wantCode(t, "GET data after DELETE", r.req(coap.GET, dp, nil), coap.NotFound)
	wantCode(t, "PUT data after DELETE", r.publish(dp, 0, []byte("x")), coap.NotFound)
	wantCode(t, "DELETE again", r.req(coap.DELETE, tp, nil), coap.NotFound)
	// The name is free again.
	r.create(sensor("n"))
}

// §3.1: HALF CREATED → (publish) FULLY CREATED → (delete topic-data) HALF
// CREATED → (delete topic) DELETED, with what each state allows.
func TestTopicLifecycle(t *testing.T) {
	r := newRig(t, nil)
	tp, dp := r.create(sensor("n"))
	// HALF CREATED: read and update the topic, but no data and no subscription.
	wantCode(t, "half: GET topic", r.req(coap.GET, tp, nil), coap.Content)
	wantCode(t, "half: iPATCH topic", r.req(coap.IPATCH, tp, enc(t, map[int]any{KeyTopicType: "t"}), coap.ContentFormat, testCF), coap.Changed)
	wantCode(t, "half: GET data", r.req(coap.GET, dp, nil), coap.NotFound)
	u := &coaptest.Observer{}
	resp := r.subscribe(dp, u)
	wantCode(t, "half: subscribe", resp, coap.NotFound)
	if resp.Options.Has(coap.Observe) || u.Starts() != 0 {
		t.Fatal("a half created topic took a subscription")
	}
	// Publish: FULLY CREATED.
	wantCode(t, "first publication", r.publish(dp, 0, []byte("1")), coap.Created)
	wantCode(t, "full: GET data", r.req(coap.GET, dp, nil), coap.Content)
	// Delete topic-data: HALF CREATED again; the configuration stays.
	wantCode(t, "DELETE data", r.req(coap.DELETE, dp, nil), coap.Deleted)
	wantCode(t, "half again: GET data", r.req(coap.GET, dp, nil), coap.NotFound)
	if got := dec(t, r.req(coap.GET, tp, nil).Payload)[KeyTopicData]; got != dp {
		t.Fatalf("topic-data changed to %v", got)
	}
	wantCode(t, "publication after DELETE data", r.publish(dp, 0, []byte("2")), coap.Created)
	// DELETED.
	wantCode(t, "DELETE topic", r.req(coap.DELETE, tp, nil), coap.Deleted)
	wantCode(t, "deleted: GET topic", r.req(coap.GET, tp, nil), coap.NotFound)
}

// §3.2.1: the first publication is a 2.01, later ones 2.04.
func TestPublishFirstCreatedThenChanged(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(sensor("n"))
	wantCode(t, "first", r.publish(dp, 110, []byte(`{"v":23.5}`)), coap.Created)
	wantCode(t, "second", r.publish(dp, 110, []byte(`{"v":22.5}`)), coap.Changed)
	resp := r.req(coap.GET, dp, nil)
	if string(resp.Payload) != `{"v":22.5}` {
		t.Fatalf("latest is %q", resp.Payload)
	}
	if st := r.b.Stats(); st.Publications != 2 {
		t.Fatalf("publications %d", st.Publications)
	}
	wantCode(t, "POST to data", r.req(coap.POST, dp, []byte("x")), coap.MethodNotAllowed)
}

// §3.2.1: a Content-Format other than topic-content-format is 4.15.
func TestPublishWithOtherContentFormatIs415(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 110})
	wantCode(t, "wrong format", r.publish(dp, 60, []byte{0x80}), coap.UnsupportedContentFormat)
	wantCode(t, "no format", r.req(coap.PUT, dp, []byte{0x80}), coap.UnsupportedContentFormat)
	wantCode(t, "right format", r.publish(dp, 110, []byte("{}")), coap.Created)
}

// A publication over max_payload is 4.13 with Size1 (RFC 7252 §5.9.2.9).
func TestPublishOverMaxPayloadIs413(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxPayload = 16 })
	_, dp := r.create(sensor("n"))
	resp := r.publish(dp, 0, make([]byte, 17))
	wantCode(t, "17 bytes", resp, coap.RequestEntityTooLarge)
	if v, _ := uintOpt(t, resp, coap.Size1); v != 16 {
		t.Fatalf("Size1 %d", v)
	}
	wantCode(t, "16 bytes", r.publish(dp, 0, make([]byte, 16)), coap.Created)
}

// PR5.1–PR5.2, scenario 3.5: a COSE-protected publication is stored and
// fanned out byte for byte, Content-Format included.
func TestCOSEPublicationPassesByteForByte(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 18})
	// A COSE_Sign1 (tag 18) with bytes the broker must not touch, among
	// them an invalid inner structure: the broker never parses it.
	cose := []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x44, 0xde, 0xad, 0xbe, 0xef, 0x58, 0x02, 0xff, 0x00, 0xff}
	r.publish(dp, 18, []byte{0xd2, 0x80})
	u := &coaptest.Observer{}
	r.subscribe(dp, u)
	r.clock.Advance(time.Second)
	req := msg(coap.PUT, dp, cose, coap.ContentFormat, 18)
	wantCode(t, "publish COSE", r.do(nil, req), coap.Changed)
	req.Payload[0] = 0 // the request's buffer is reused by the transport
	n := u.Notifications()
	if len(n) != 1 || !bytes.Equal(n[0].Payload, []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x44, 0xde, 0xad, 0xbe, 0xef, 0x58, 0x02, 0xff, 0x00, 0xff}) {
		t.Fatalf("notification %v", n)
	}
	if cf, _ := uintOpt(t, n[0], coap.ContentFormat); cf != 18 {
		t.Fatalf("Content-Format %d", cf)
	}
	got := r.req(coap.GET, dp, nil)
	if got.Payload[0] != 0xd2 || len(got.Payload) != len(cose) {
		t.Fatalf("stored %x", got.Payload)
	}
}

// §3.2.2: GET with Observe=0 through the hub's Upstream: the first
// response carries Observe, Started comes before it, and each publication
// is a Notify with Observe, Content-Format, Max-Age and the payload.
func TestSubscribeThroughHubUpstream(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 110})
	r.publish(dp, 110, []byte("19.87"))
	u := &coaptest.Observer{}
	resp := r.subscribe(dp, u)
	wantCode(t, "subscribe", resp, coap.Content)
	obs0, ok := uintOpt(t, resp, coap.Observe)
	if !ok || u.Starts() != 1 || u.Starts() == 0 {
		t.Fatalf("Observe present %v, Started %d", ok, u.Starts())
	}
	if ma, _ := uintOpt(t, resp, coap.MaxAge); ma != 60 || string(resp.Payload) != "19.87" {
		t.Fatalf("first response Max-Age %d payload %q", ma, resp.Payload)
	}
	r.clock.Advance(time.Second)
	r.publish(dp, 110, []byte("21.87"))
	r.clock.Advance(time.Second)
	r.publish(dp, 110, []byte("22.00"))
	n := u.Notifications()
	if len(n) != 2 {
		t.Fatalf("%d notifications, want 2", len(n))
	}
	prev := obs0
	for i, want := range []string{"21.87", "22.00"} {
		seq, ok := uintOpt(t, n[i], coap.Observe)
		cf, _ := uintOpt(t, n[i], coap.ContentFormat)
		ma, hasMA := uintOpt(t, n[i], coap.MaxAge)
		if n[i].Code != coap.Content || !ok || seq <= prev || cf != 110 || !hasMA || ma != 60 || string(n[i].Payload) != want {
			t.Fatalf("notification %d: %v seq %d cf %d max-age %d %q", i, n[i].Code, seq, cf, ma, n[i].Payload)
		}
		prev = seq
	}
	if st := r.b.Stats(); st.SubscribersInformed != 2 || st.Subscriptions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// §3.2.2: when max-subscribers is reached the 2.05 has no Observe (RFC
// 7641 §4.1).
func TestSubscribeOverMaxSubscribersGetsContentWithoutObserve(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyMaxSubscribers: 1})
	r.publish(dp, 0, []byte("v"))
	if resp := r.subscribe(dp, &coaptest.Observer{}); !resp.Options.Has(coap.Observe) {
		t.Fatal("first subscription refused")
	}
	u := &coaptest.Observer{}
	resp := r.subscribe(dp, u)
	wantCode(t, "second subscription", resp, coap.Content)
	if resp.Options.Has(coap.Observe) || u.Starts() != 0 || string(resp.Payload) != "v" {
		t.Fatalf("over the limit: Observe %v, Started %d", resp.Options.Has(coap.Observe), u.Starts())
	}
}

// Without a hub (no Upstream in the context) a GET with Observe=0 is a
// one-shot read.
func TestSubscribeWithoutHubIsOneShot(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(sensor("n"))
	r.publish(dp, 0, []byte("v"))
	resp := r.req(coap.GET, dp, nil, coap.Observe, 0)
	wantCode(t, "GET Observe=0 without hub", resp, coap.Content)
	if resp.Options.Has(coap.Observe) || r.b.Stats().Subscriptions != 0 {
		t.Fatal("registered an observation nobody can be notified through")
	}
}

// §3.2.3: the hub's cancel (an unsubscription, RFC 7641 §3.6) removes the
// subscription; no more notifications follow.
func TestUnsubscribeCancelStopsNotifications(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MinPublishInterval = Duration{} })
	_, dp := r.create(sensor("n"))
	r.publish(dp, 0, []byte("1"))
	u := &coaptest.Observer{}
	r.subscribe(dp, u)
	r.publish(dp, 0, []byte("2"))
	if err := u.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := u.Cancel(context.Background()); err != nil {
		t.Fatal("cancel is not idempotent:", err)
	}
	r.publish(dp, 0, []byte("3"))
	if n := u.Notifications(); len(n) != 1 || string(n[0].Payload) != "2" {
		t.Fatalf("notifications %v", n)
	}
	if st := r.b.Stats(); st.Subscriptions != 0 {
		t.Fatalf("subscriptions %d", st.Subscriptions)
	}
}

// §3.2.4: DELETE on topic-data: 2.02, back to HALF CREATED, subscribers
// get a final 4.04, a repeated DELETE gets 4.04.
func TestDeleteTopicDataEndsSubscriptionsWith404(t *testing.T) {
	r := newRig(t, nil)
	_, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyTopicContentFormat: 60, KeyInitialize: []byte{0x80}})
	u := &coaptest.Observer{}
	r.subscribe(dp, u)
	wantCode(t, "DELETE data", r.req(coap.DELETE, dp, nil), coap.Deleted)
	if n := u.Notifications(); len(n) != 1 || n[0].Code != coap.NotFound {
		t.Fatalf("notifications %v", n)
	}
	wantCode(t, "DELETE data again", r.req(coap.DELETE, dp, nil), coap.NotFound)
	// Not initialized again, "initialize" notwithstanding.
	wantCode(t, "GET data", r.req(coap.GET, dp, nil), coap.NotFound)
	wantCode(t, "publish", r.publish(dp, 60, []byte{0x81, 0x01}), coap.Created)
}

// §3.3: GET on topic-data returns the latest publication with its
// Content-Format and Max-Age; 4.04 when there is none.
func TestReadLatestData(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxAge = Duration{15 * time.Second} })
	_, dp := r.create(sensor("n"))
	wantCode(t, "before publication", r.req(coap.GET, dp, nil), coap.NotFound)
	r.publish(dp, 110, []byte("23.5"))
	resp := r.req(coap.GET, dp, nil)
	wantCode(t, "GET", resp, coap.Content)
	cf, _ := uintOpt(t, resp, coap.ContentFormat)
	ma, _ := uintOpt(t, resp, coap.MaxAge)
	if cf != 110 || ma != 15 || string(resp.Payload) != "23.5" || resp.Options.Has(coap.Observe) {
		t.Fatalf("cf %d max-age %d payload %q", cf, ma, resp.Payload)
	}
	wantCode(t, "Accept other", r.req(coap.GET, dp, nil, coap.Accept, 60), coap.NotAcceptable)
	wantCode(t, "unknown data", r.req(coap.GET, "/ps/data/none", nil), coap.NotFound)
}

// §3.4: publishing faster than min_publish_interval is 4.29 with Max-Age
// saying when to retry (RFC 8516).
func TestPublishTooFastIs429WithMaxAge(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MinPublishInterval = Duration{2500 * time.Millisecond} })
	_, dp := r.create(sensor("n"))
	wantCode(t, "first", r.publish(dp, 0, []byte("1")), coap.Created)
	r.clock.Advance(time.Second)
	resp := r.publish(dp, 0, []byte("2"))
	wantCode(t, "too fast", resp, coap.TooManyRequests)
	if ma, ok := uintOpt(t, resp, coap.MaxAge); !ok || ma != 2 {
		t.Fatalf("Max-Age %d (present %v), want 2", ma, ok)
	}
	if got := r.req(coap.GET, dp, nil); string(got.Payload) != "1" {
		t.Fatalf("a refused publication was stored: %q", got.Payload)
	}
	r.clock.Advance(1500 * time.Millisecond)
	wantCode(t, "after Max-Age", r.publish(dp, 0, []byte("3")), coap.Changed)
}

// §2.2.1 expiration-date: when it comes the topic is deleted as by DELETE,
// subscribers get a final 4.04.
func TestExpirationDateDeletesTopic(t *testing.T) {
	r := newRig(t, nil)
	exp := r.clock.Now().Add(time.Hour).Unix()
	tp, dp := r.create(map[int]any{KeyTopicName: "n", KeyResourceType: RTData, KeyExpirationDate: cbor.Tag{Number: 1, Content: exp}})
	r.publish(dp, 0, []byte("v"))
	u := &coaptest.Observer{}
	resp := r.subscribe(dp, u)
	if ma, _ := uintOpt(t, resp, coap.MaxAge); ma != 60 {
		t.Fatalf("Max-Age %d", ma)
	}
	r.clock.Advance(time.Hour - 30*time.Second)
	if ma, _ := uintOpt(t, r.req(coap.GET, dp, nil), coap.MaxAge); ma != 30 {
		t.Fatalf("Max-Age near expiration %d, want 30", ma)
	}
	r.clock.Advance(30 * time.Second)
	if n := u.Notifications(); len(n) != 1 || n[0].Code != coap.NotFound {
		t.Fatalf("notifications %v", n)
	}
	wantCode(t, "GET expired topic", r.req(coap.GET, tp, nil), coap.NotFound)
	if st := r.b.Stats(); st.Topics != 0 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// DefaultExpiration gives one to a topic that asks for none.
	r2 := newRig(t, func(c *Config) { c.DefaultExpiration = Duration{time.Minute} })
	tp2, _ := r2.create(sensor("m"))
	if _, ok := dec(t, r2.req(coap.GET, tp2, nil).Payload)[KeyExpirationDate]; !ok {
		t.Fatal("no expiration-date from default_expiration")
	}
	r2.clock.Advance(time.Minute)
	wantCode(t, "GET after default expiration", r2.req(coap.GET, tp2, nil), coap.NotFound)
}

// The stage passes what is not the broker's to next, and refuses critical
// options it does not implement (OSCORE: the gateway holds no keys).
func TestStageRoutesOnlyItsPath(t *testing.T) {
	r := newRig(t, nil)
	for _, m := range []*coap.Message{
		msg(coap.GET, "/other", nil),
		msg(coap.GET, "/psx", nil),
		msg(coap.GET, "/.well-known/core", nil),
		msg(coap.GET, "/ps", nil, coap.ProxyURI, []byte("coap://node/ps")),
	} {
		wantCode(t, "not the broker's", r.do(nil, m), coap.NotImplemented)
	}
	if r.next != 4 {
		t.Fatalf("next saw %d", r.next)
	}
	wantCode(t, "OSCORE", r.req(coap.GET, "/ps", nil, coap.OSCORE, []byte{0x09}), coap.BadOption)
	wantCode(t, "Block1", r.req(coap.PUT, "/ps/data/x", nil, coap.Block1, 0x0e), coap.BadOption)
	wantCode(t, "deep path", r.req(coap.GET, "/ps/a/b/c/d/e/f", nil), coap.NotFound)
	wantCode(t, "/ps/data", r.req(coap.GET, "/ps/data", nil), coap.NotFound)
	wantCode(t, "DELETE collection", r.req(coap.DELETE, "/ps", nil), coap.MethodNotAllowed)
	r.b.Close()
	wantCode(t, "after Close", r.req(coap.GET, "/ps", nil), coap.ServiceUnavailable)
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig(t)
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"empty path":        func(c *Config) { c.Path = "" },
		"slash path":        func(c *Config) { c.Path = "/ps" },
		"dotdot":            func(c *Config) { c.Path = "a/../b" },
		"well-known":        func(c *Config) { c.Path = ".well-known/ps" },
		"relative dir":      func(c *Config) { c.StateDir = "state" },
		"registered format": func(c *Config) { c.ContentFormat = 60 },
		"no topics":         func(c *Config) { c.MaxTopics = 0 },
		"huge payload":      func(c *Config) { c.MaxPayload = 1 << 20 },
		"negative interval": func(c *Config) { c.MinPublishInterval = Duration{-1} },
		"zero max-age":      func(c *Config) { c.MaxAge = Duration{} },
		"negative subs":     func(c *Config) { c.DefaultMaxSubscribers = -1 },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	c := ok
	c.Path = "pubsub/v1"
	r := openRig(t, c)
	tp, dp := r.create(sensor("n"))
	if !strings.HasPrefix(tp, "/pubsub/v1/") || !strings.HasPrefix(dp, "/pubsub/v1/data/") {
		t.Fatalf("paths %s %s", tp, dp)
	}
}
