package pubsub

import (
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/coaptest"
)

// Topics lists the live topics with their name, resources, format,
// state and subscriptions, ordered by name and bounded; a name is kept
// exactly as its creator sent it.
func TestTopicsListsLiveTopics(t *testing.T) {
	r := newRig(t, nil)
	hostile := "<script>alert(1)</script>"
	tp1, dp1 := r.create(map[int]any{KeyTopicName: hostile, KeyResourceType: RTData, KeyTopicContentFormat: 110})
	tp2, dp2 := r.create(map[int]any{KeyTopicName: "a-sensor", KeyResourceType: RTData})
	r.clock.Advance(time.Second)
	wantCode(t, "publish", r.publish(dp1, 110, []byte("1")), coap.Created)
	u := &coaptest.Observer{}
	wantCode(t, "subscribe", r.subscribe(dp1, u), coap.Content)

	got := r.b.Topics(10)
	if len(got) != 2 {
		t.Fatalf("%d topics: %+v", len(got), got)
	}
	h, a := got[0], got[1] // "<" sorts before "a"
	if a.Name != "a-sensor" || a.Path != tp2 || a.DataPath != dp2 || a.ContentFormat != -1 || a.FullyCreated || a.Subscriptions != 0 || !a.LastPublished.IsZero() {
		t.Errorf("first topic %+v", a)
	}
	if h.Name != hostile || h.Path != tp1 || h.DataPath != dp1 || h.ContentFormat != 110 || !h.FullyCreated || h.Subscriptions != 1 || !h.LastPublished.Equal(r.clock.Now()) {
		t.Errorf("second topic %+v", h)
	}
	if got := r.b.Topics(1); len(got) != 1 || got[0].Name != hostile {
		t.Fatalf("bounded to 1: %+v", got)
	}
}
