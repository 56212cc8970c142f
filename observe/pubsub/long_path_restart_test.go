package pubsub

import (
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// A topic-data URI longer than the decoder's 255-byte text limit would be
// accepted and acknowledged, and its state file could not be decoded at
// the next start: the topic and its acknowledged publication lost. So a
// path whose topic-data URIs could exceed 255 bytes is refused, and a
// topic under the longest accepted path survives a restart.
func TestRestartKeepsTopicUnderLongestValidPath(t *testing.T) {
	cfg := testConfig(t)
	seg := strings.Repeat("p", 63)
	cfg.Path = strings.Join([]string{seg, seg, seg, seg}, "/")
	if err := cfg.Validate(); err == nil {
		t.Fatal("a path whose topic-data URIs exceed 255 bytes was accepted")
	}
	// The longest accepted: "/" + path + "/data/" + 63 = 255.
	cfg.Path = strings.Join([]string{seg, seg, strings.Repeat("p", 255-1-6-63-2*63-2)}, "/")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	r := openRig(t, cfg)
	_, dp := r.create(map[int]any{KeyTopicName: "t", KeyResourceType: RTData})
	wantCode(t, "publish", r.publish(dp, 0, []byte("acknowledged")), coap.Created)
	r.b.Close()

	r2 := openRig(t, cfg)
	if st := r2.b.Stats(); st.Topics != 1 || st.BadStateFiles != 0 {
		t.Fatalf("after restart: %+v (topic-data %d bytes)", st, len(dp))
	}
	got := r2.req(coap.GET, dp, nil)
	if got.Code != coap.Content || string(got.Payload) != "acknowledged" {
		t.Fatalf("acknowledged publication after restart: %v %q", got.Code, got.Payload)
	}
}
