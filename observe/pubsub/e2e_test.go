package pubsub

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"github.com/opaque-edge/gatewayd/observe"
)

// A real peer over real UDP: libcoap's coap-client creates nothing here
// (it cannot send CBOR comfortably), but publishes with PUT and reads the
// publication back with GET, against a coap.Endpoint serving the stage.
func TestCoapClientPublishesAndReadsOverUDP(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatalf("coap-client-notls (Debian libcoap3-bin) is required: %v", err)
	}
	cfg := testConfig(t)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := coap.NewEndpoint(u, coap.EndpointConfig{Handler: b.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		return coap.Errorf(coap.NotFound, "")
	}))})
	defer ep.Close()
	addr := u.LocalAddr()

	c := client(t)
	resp := doUDP(t, c, addr, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "e2e", KeyResourceType: RTData, KeyTopicContentFormat: 0}), coap.ContentFormat, testCF))
	wantCode(t, "create", resp, coap.Created)
	dp := dec(t, resp.Payload)[KeyTopicData].(string)
	uri := fmt.Sprintf("coap://%v%s", addr, dp)

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client-notls %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-m", "put", "-t", "0", "-e", "hello from libcoap", uri)
	if out := run("-m", "get", uri); !strings.Contains(out, "hello from libcoap") {
		t.Fatalf("GET after first PUT: %q", out)
	}
	run("-m", "put", "-t", "0", "-e", "second", uri)
	if out := run("-m", "get", uri); !strings.Contains(out, "second") || strings.Contains(out, "hello") {
		t.Fatalf("GET after second PUT: %q", out)
	}
	// The collection, as libcoap sees it.
	if out := run("-m", "get", fmt.Sprintf("coap://%v/ps?rt=core.ps.data", addr)); !strings.Contains(out, "<"+dp+">") {
		t.Fatalf("collection query: %q", out)
	}
	if st := b.Stats(); st.Publications != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// The hub contract end to end: two observers through the real observe
// hub and UDP share one broker subscription; a publication reaches both,
// byte for byte; deleting the topic ends both observations with 4.04.
func TestHubFansOutPublicationsAndTopicDeletion(t *testing.T) {
	cfg := testConfig(t)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	hub := observe.New(observe.Defaults())
	defer hub.Close()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := coap.NewEndpoint(u, coap.EndpointConfig{Handler: hub.Stage(b.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		return coap.Errorf(coap.NotFound, "")
	})))})
	defer ep.Close()
	addr := u.LocalAddr()
	c := client(t)
	resp := doUDP(t, c, addr, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "hub", KeyResourceType: RTData, KeyTopicContentFormat: 18}), coap.ContentFormat, testCF))
	var loc []string
	for v := range resp.Options.All(coap.LocationPath) {
		loc = append(loc, string(v))
	}
	dp := dec(t, resp.Payload)[KeyTopicData].(string)
	wantCode(t, "first publication", doUDP(t, c, addr, msg(coap.PUT, dp, []byte{0xd2, 0x80}, coap.ContentFormat, 18)), coap.Created)

	type obs struct {
		mu    sync.Mutex
		notes []*coap.Message
	}
	var watchers [2]*obs
	for i := range watchers {
		w := &obs{}
		watchers[i] = w
		oc := client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		first, _, err := oc.Observe(ctx, addr, msg(coap.GET, dp, nil), func(n *coap.Message) {
			w.mu.Lock()
			w.notes = append(w.notes, n.Clone())
			w.mu.Unlock()
		})
		cancel()
		if err != nil || !first.Options.Has(coap.Observe) {
			t.Fatalf("observer %d: %v %v", i, first, err)
		}
	}
	if st := b.Stats(); st.Subscriptions != 1 {
		t.Fatalf("broker subscriptions %d, want 1 shared by the hub", st.Subscriptions)
	}
	cose := []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x42, 0xbe, 0xef, 0x40}
	wantCode(t, "publish", doUDP(t, c, addr, msg(coap.PUT, dp, cose, coap.ContentFormat, 18)), coap.Changed)
	waitFor := func(what string, cond func(n []*coap.Message) bool) {
		t.Helper()
		for _, w := range watchers {
			testutil.Eventually(t, what, func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return cond(w.notes)
			})
		}
	}
	waitFor("publication", func(n []*coap.Message) bool {
		return len(n) >= 1 && bytes.Equal(n[len(n)-1].Payload, cose)
	})
	wantCode(t, "DELETE topic", doUDP(t, c, addr, msg(coap.DELETE, "/"+strings.Join(loc, "/"), nil)), coap.Deleted)
	waitFor("final 4.04", func(n []*coap.Message) bool {
		return len(n) >= 1 && n[len(n)-1].Code == coap.NotFound
	})
}
