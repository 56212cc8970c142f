package mqtt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// blob is a COSE_Sign1-like payload with NUL, 0xff and CR LF in it, plus
// a sequence number at the end.
func blob(seq uint32) []byte {
	b := []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x00, 0xff, 0x0d, 0x0a, 0x58, 0x40, 0x00, 0xff, 0xfe, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[len(b)-4:], seq)
	return b
}

// subscribeSession creates a persistent MQTT v5 session for id on the
// broker, subscribed to topic with QoS 1, and returns at once (-E): from
// then on the broker keeps the messages for it.
func subscribeSession(t *testing.T, b *broker, id, topic string) {
	t.Helper()
	need(t, "mosquitto_sub")
	out, err := exec.Command("mosquitto_sub", "-V", "mqttv5", "-p", itoa(b.Port), "-h", "127.0.0.1",
		"-c", "-i", id, "-x", "600", "-q", "1", "-t", topic, "-E").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub -E: %v\n%s", err, out)
	}
}

// receive collects what the session id has been sent, for up to wait,
// one line per message in the format given.
func receive(t *testing.T, b *broker, id, topic, format string, count int, wait time.Duration) []string {
	t.Helper()
	args := []string{"-V", "mqttv5", "-p", itoa(b.Port), "-h", "127.0.0.1", "-c", "-i", id, "-x", "600", "-q", "1", "-t", topic,
		"-F", format, "-W", itoa(int(wait / time.Second))}
	if count > 0 {
		args = append(args, "-C", itoa(count))
	}
	out, _ := exec.Command("mosquitto_sub", args...).Output() // -W ends it with a non-zero status
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCoAPRepresentationsReachMosquittoSubByteForByte(t *testing.T) {
	need(t, "mosquitto", "mosquitto_sub")
	br := startBroker(t)
	subscribeSession(t, br, "sub-up", "gw/test/up/temp")
	origin := newObservable(t, blob(0))
	ch := newChain(t, origin.addr)
	b, err := New(Config{
		Broker: br.URL(), ClientID: "gw-test-up",
		Up: []Up{{Observe: "coap://[fd00::1]/sensors/temp", Topic: "gw/test/up/temp"}},
	}, ch.do, ch.observe, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b)
	testutil.EventuallyWithin(t, 5*time.Second, "the first representation", func() bool { return b.Stats().Notifications > 0 })
	want := [][]byte{blob(0)}
	for i := uint32(1); i <= 5; i++ {
		origin.notify(blob(i))
		want = append(want, blob(i))
	}
	testutil.EventuallyWithin(t, 10*time.Second, "PUBACKs", func() bool { return b.Stats().Published >= uint64(len(want)) })

	lines := receive(t, br, "sub-up", "gw/test/up/temp", "%C|%P|%x", len(want), 5*time.Second)
	if len(lines) != len(want) {
		t.Fatalf("got %d messages, want %d: %q", len(lines), len(want), lines)
	}
	for i, l := range lines {
		f := strings.Split(l, "|")
		got, _ := hex.DecodeString(f[2])
		if !bytes.Equal(got, want[i]) {
			t.Errorf("message %d: %x, want %x", i, got, want[i])
		}
		if f[0] != `application/cose;cose-type="cose-sign1"` || !strings.Contains(f[1], "coap-cf:18") {
			t.Errorf("message %d properties: content type %q, user %q", i, f[0], f[1])
		}
	}
}

func TestMosquittoPubReachesCoAPOriginAsPUT(t *testing.T) {
	need(t, "mosquitto", "mosquitto_pub")
	br := startBroker(t)
	origin := newObservable(t, nil)
	ch := newChain(t, origin.addr)
	b, err := New(Config{
		Broker: br.URL(), ClientID: "gw-test-down",
		Down: []Down{{Topic: "gw/test/down/+", Put: "coap://[fd00::1]/ps/data/valve"}},
	}, ch.do, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b)
	testutil.EventuallyWithin(t, 5*time.Second, "the subscription", func() bool { return b.Stats().Connects > 0 })

	payload := blob(42)
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mosquitto_pub", "-V", "mqttv5", "-p", itoa(br.Port), "-h", "127.0.0.1", "-q", "1",
		"-t", "gw/test/down/valve", "-f", file, "-D", "publish", "content-type", "application/cbor").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "the PUT", func() bool { return len(origin.putsSeen()) > 0 })
	put := origin.putsSeen()[0]
	if !bytes.Equal(put.Payload, payload) {
		t.Errorf("PUT payload %x, want %x", put.Payload, payload)
	}
	var path []string
	for v := range put.Options.All(coap.URIPath) {
		path = append(path, string(v))
	}
	if cf, _ := put.Options.Uint(coap.ContentFormat); cf != 60 || strings.Join(path, "/") != "ps/data/valve" {
		t.Errorf("PUT Content-Format %d path %q", cf, path)
	}
	testutil.EventuallyWithin(t, 2*time.Second, "the counter", func() bool { return b.Stats().Delivered == 1 })
}

func TestBrokerRestartLosesNothingAcknowledged(t *testing.T) {
	need(t, "mosquitto", "mosquitto_sub")
	br := startBroker(t)
	subscribeSession(t, br, "sub-restart", "gw/test/restart")
	origin := newObservable(t, blob(0))
	ch := newChain(t, origin.addr)
	b, err := New(Config{
		Broker: br.URL(), ClientID: "gw-test-restart", QueueSize: 4096,
		Up: []Up{{Observe: "coap://node/sensors/temp", Topic: "gw/test/restart"}},
	}, ch.do, ch.observe, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b)
	testutil.EventuallyWithin(t, 5*time.Second, "the observation", func() bool { return b.Stats().Notifications > 0 })

	const n = 150
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := uint32(1); i < n; i++ {
			origin.notify(blob(i))
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	testutil.EventuallyWithin(t, 10*time.Second, "some PUBACKs", func() bool { return b.Stats().Published > 30 })
	br.Stop() // mid-stream
	// The broker stays away until notifications made in its absence are
	// waiting for their PUBACK: the outage has caught some of the stream.
	during := b.Stats().Notifications
	testutil.EventuallyWithin(t, 10*time.Second, "notifications queued while the broker is down", func() bool {
		s := b.Stats()
		return s.Notifications >= during+10 && s.Queued > 0
	})
	br.Start()
	<-sent
	testutil.EventuallyWithin(t, 30*time.Second, "the queue to drain", func() bool {
		s := b.Stats()
		return s.Queued == 0 && s.Notifications == n
	})
	s := b.Stats()
	if s.Published < n || s.Dropped != 0 || s.Connects < 2 {
		t.Fatalf("stats %+v: want %d published, none dropped, a reconnect", s, n)
	}

	lines := receive(t, br, "sub-restart", "gw/test/restart", "%x", 0, 3*time.Second)
	got := map[uint32]int{}
	for _, l := range lines {
		p, err := hex.DecodeString(l)
		if err != nil || len(p) < 4 {
			t.Fatalf("bad line %q", l)
		}
		got[binary.BigEndian.Uint32(p[len(p)-4:])]++
	}
	for i := uint32(0); i < n; i++ {
		if got[i] == 0 {
			t.Errorf("representation %d was acknowledged but never delivered", i)
		}
	}
	t.Logf("%d published, %d delivered to mosquitto_sub (%d unique), %d connects", s.Published, len(lines), len(got), s.Connects)
}

// A PUT answered 4.29 (a pub-sub topic's min_publish_interval) is tried
// again after its Max-Age and delivered, not counted as failed and
// acknowledged away.
func TestPutAnswered429IsRetriedAfterMaxAge(t *testing.T) {
	need(t, "mosquitto", "mosquitto_pub")
	br := startBroker(t)
	var mu sync.Mutex
	var codes []coap.Code // guarded by mu: the answers given, in order
	do := func(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		resp := &coap.Message{Code: coap.Changed}
		if len(codes) == 0 {
			resp.Code = coap.TooManyRequests
			resp.Options = resp.Options.SetUint(coap.MaxAge, 0) // at once (100 ms floor)
		}
		codes = append(codes, resp.Code)
		return resp, nil
	}
	b, err := New(Config{
		Broker: br.URL(), ClientID: "gw-test-429",
		Down: []Down{{Topic: "gw/test/429", Put: "coap://[fd00::1]/ps/data/t"}},
	}, do, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b)
	testutil.EventuallyWithin(t, 5*time.Second, "the subscription", func() bool { return b.Stats().Connects > 0 })
	out, err := exec.Command("mosquitto_pub", "-V", "mqttv5", "-p", itoa(br.Port), "-h", "127.0.0.1", "-q", "1",
		"-t", "gw/test/429", "-m", "21.5").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "the delivery", func() bool { return b.Stats().Delivered == 1 })
	mu.Lock()
	defer mu.Unlock()
	if st := b.Stats(); st.Failed != 0 || len(codes) != 2 {
		t.Fatalf("answers %v, stats %+v", codes, st)
	}
}

// A PUT still unanswered when the bridge stops is not acknowledged: the
// broker keeps the message for the session and sends it again.
func TestMessageNotAcknowledgedWhenStoppedBeforeThePUTIsAnswered(t *testing.T) {
	need(t, "mosquitto", "mosquitto_pub")
	br := startBroker(t)
	started := make(chan struct{}, 1)
	blocking := func(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cfg := Config{
		Broker: br.URL(), ClientID: "gw-test-stop",
		Down: []Down{{Topic: "gw/test/stop", Put: "coap://[fd00::1]/ps/data/t"}},
	}
	b, err := New(cfg, blocking, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	testutil.EventuallyWithin(t, 5*time.Second, "the subscription", func() bool { return b.Stats().Connects > 0 })
	if out, err := exec.Command("mosquitto_pub", "-V", "mqttv5", "-p", itoa(br.Port), "-h", "127.0.0.1", "-q", "1",
		"-t", "gw/test/stop", "-m", "keep me").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no PUT")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The same session again: the broker redelivers the message.
	got := make(chan string, 4)
	b2, err := New(cfg, func(ctx context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
		got <- string(req.Payload)
		return &coap.Message{Code: coap.Changed}, nil
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b2)
	select {
	case p := <-got:
		if p != "keep me" {
			t.Fatalf("redelivered %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the message was not sent again; stats %+v", b2.Stats())
	}
}

// An ObserveFunc that hands the bridge block 0 of a larger representation
// (RFC 7959 §2.6) gets it refused: only a whole representation is
// published, so the first message the subscriber gets is the whole one
// that followed.
func TestFirstBlockOfALargerRepresentationIsNotPublished(t *testing.T) {
	need(t, "mosquitto", "mosquitto_sub")
	br := startBroker(t)
	subscribeSession(t, br, "sub-partial", "gw/test/up/partial")
	partial := &coap.Message{Code: coap.Content, Payload: bytes.Repeat([]byte{0xd2}, 1024)}
	partial.Options = partial.Options.SetUint(coap.Observe, 1).Insert(coap.Block2, []byte{0x0e}).SetUint(coap.Size2, 10240)
	whole := &coap.Message{Code: coap.Content, Payload: blob(7)}
	whole.Options = whole.Options.SetUint(coap.Observe, 2)
	observe := func(ctx context.Context, _ string, fn func(*coap.Message)) error {
		fn(partial)
		fn(whole)
		<-ctx.Done()
		return ctx.Err()
	}
	b, err := New(Config{
		Broker: br.URL(), ClientID: "gw-test-partial",
		Up: []Up{{Observe: "coap://[fd00::1]/big", Topic: "gw/test/up/partial"}},
	}, nil, observe, nil)
	if err != nil {
		t.Fatal(err)
	}
	runBridge(t, b)
	got := receive(t, br, "sub-partial", "gw/test/up/partial", "%x", 1, 10*time.Second)
	if len(got) != 1 || got[0] != hex.EncodeToString(blob(7)) {
		t.Fatalf("first message %q, want the whole representation %x", got, blob(7))
	}
	if s := b.Stats(); s.Notifications != 1 || s.ObserveErrors != 1 {
		t.Errorf("stats %+v, want the block refused and the whole queued", s)
	}
}
