package pubsub

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// childEnv makes the test binary a broker process (TestMain) serving the
// state directory it names, on a UDP port it prints.
const childEnv = "PUBSUB_TEST_CHILD_STATE_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holderEnv); dir != "" {
		os.Exit(runHolder(dir))
	}
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	cfg := Defaults()
	cfg.StateDir = dir
	cfg.MinPublishInterval = Duration{}
	b, err := New(cfg, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ep := coap.NewEndpoint(u, coap.EndpointConfig{Handler: b.Stage(coap.HandlerFunc(func(context.Context, coap.ResponseWriter, *coap.Request) error {
		return coap.Errorf(coap.NotFound, "")
	}))})
	defer ep.Close()
	fmt.Printf("ADDR %v\n", u.LocalAddr())
	// Serve until killed; stdin closing (the parent went away) ends it too.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func client(t testing.TB) *coap.Endpoint {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := coap.NewEndpoint(u, coap.EndpointConfig{})
	t.Cleanup(func() { ep.Close() })
	return ep
}

func doUDP(t testing.TB, c *coap.Endpoint, to netip.AddrPort, m *coap.Message) *coap.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, to, m)
	if err != nil {
		t.Fatalf("%v: %v", m, err)
	}
	return resp
}

// An acknowledged publication survives kill -9 of the broker: the 2.04
// goes out only after the state file is on disk.
func TestKill9KeepsAcknowledgedPublication(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	to, err := netip.ParseAddrPort(strings.TrimSpace(strings.TrimPrefix(line, "ADDR ")))
	if err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	c := client(t)
	resp := doUDP(t, c, to, msg(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "k9", KeyResourceType: RTData, KeyTopicContentFormat: 0}), coap.ContentFormat, testCF))
	wantCode(t, "create", resp, coap.Created)
	dp := dec(t, resp.Payload)[KeyTopicData].(string)
	wantCode(t, "first", doUDP(t, c, to, msg(coap.PUT, dp, []byte("first"), coap.ContentFormat, 0)), coap.Created)
	resp = doUDP(t, c, to, msg(coap.PUT, dp, []byte("acknowledged"), coap.ContentFormat, 0))
	wantCode(t, "second", resp, coap.Changed)
	// SIGKILL right after the ack: no chance to flush anything.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	cfg := testConfig(t)
	cfg.StateDir = dir
	r := openRig(t, cfg)
	got := r.req(coap.GET, dp, nil)
	wantCode(t, "GET after restart", got, coap.Content)
	if string(got.Payload) != "acknowledged" {
		t.Fatalf("after kill -9: %q", got.Payload)
	}
	if cf, ok := uintOpt(t, got, coap.ContentFormat); !ok || cf != 0 {
		t.Fatalf("Content-Format %d %v", cf, ok)
	}
}

// Topics, their configuration, their state and their last publication
// survive a restart; deletions too.
func TestRestartKeepsTopicsAndLastPublication(t *testing.T) {
	cfg := testConfig(t)
	r := openRig(t, cfg)
	tp1, dp1 := r.create(map[int]any{KeyTopicName: "full", KeyResourceType: RTData, KeyTopicContentFormat: 18, KeyMaxSubscribers: 7})
	tp2, dp2 := r.create(sensor("half"))
	tp3, _ := r.create(sensor("deleted"))
	_, dp4 := r.create(sensor("data-deleted"))
	cose := []byte{0xd2, 0x84, 0x40, 0xa0, 0x41, 0x00, 0x40}
	r.publish(dp1, 18, cose)
	r.publish(dp4, 0, []byte("x"))
	r.req(coap.DELETE, tp3, nil)
	r.req(coap.DELETE, dp4, nil)
	r.b.Close()

	r2 := openRig(t, cfg)
	if st := r2.b.Stats(); st.Topics != 3 || st.BadStateFiles != 0 {
		t.Fatalf("after restart: %+v", st)
	}
	got := r2.req(coap.GET, dp1, nil)
	if got.Code != coap.Content || string(got.Payload) != string(cose) {
		t.Fatalf("publication after restart: %v %x", got.Code, got.Payload)
	}
	if m := dec(t, r2.req(coap.GET, tp1, nil).Payload); m[KeyMaxSubscribers] != uint64(7) || m[KeyTopicContentFormat] != uint64(18) {
		t.Fatalf("configuration after restart: %v", m)
	}
	wantCode(t, "half created stays half", r2.req(coap.GET, dp2, nil), coap.NotFound)
	wantCode(t, "half topic exists", r2.req(coap.GET, tp2, nil), coap.Content)
	wantCode(t, "deleted stays deleted", r2.req(coap.GET, tp3, nil), coap.NotFound)
	wantCode(t, "deleted data stays deleted", r2.req(coap.GET, dp4, nil), coap.NotFound)
	wantCode(t, "publish after restart", r2.publish(dp1, 18, cose), coap.Changed)
	wantCode(t, "name still taken", r2.req(coap.POST, "/ps", enc(t, sensor("full")), coap.ContentFormat, testCF), coap.BadRequest)
}

// Unusable state files are reported and skipped; the broker starts.
func TestBadStateFilesAreSkipped(t *testing.T) {
	cfg := testConfig(t)
	r := openRig(t, cfg)
	tp, dp := r.create(sensor("good"))
	r.publish(dp, 0, []byte("ok"))
	r.b.Close()
	good, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFiles.Prefix+strings.TrimPrefix(tp, "/ps/")+stateFiles.Suffix))
	if err != nil {
		t.Fatal(err)
	}
	badProps, _ := encodeRecord(&record{Version: recordVersion, ID: "abcd", Config: []byte{0xa1, 0x18, 0x63, 0x01}})
	otherVersion, _ := encodeRecord(&record{Version: 99, ID: "abce"})
	badID, _ := encodeRecord(&record{Version: recordVersion, ID: "../x"})
	files := map[string][]byte{
		"topic-garbage.cbor":   []byte("not cbor at all"),
		"topic-truncated.cbor": good[:len(good)/2],
		"topic-props.cbor":     badProps,
		"topic-version.cbor":   otherVersion,
		"topic-id.cbor":        badID,
		"topic-dup.cbor":       good, // the same topic twice
		"topic-huge.cbor":      make([]byte, maxConfigBytes+cfg.MaxPayload+2048),
		".topic-123.tmp":       []byte("a crash before rename"),
		"README":               []byte("not ours"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(cfg.StateDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(cfg.StateDir, "topic-dir.cbor"), 0o700); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	r2 := openRig(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	st := r2.b.Stats()
	if st.Topics != 1 || st.BadStateFiles != 8 {
		t.Fatalf("stats %+v, want 1 topic and 8 bad files", st)
	}
	if got := r2.req(coap.GET, dp, nil); string(got.Payload) != "ok" {
		t.Fatalf("good topic: %v %q", got.Code, got.Payload)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, ".topic-123.tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	r2.b.Close() // its log is complete
	for _, name := range []string{"garbage", "truncated", "props", "version", "id", "huge", "dir"} {
		if !strings.Contains(log.String(), "topic-"+name+".cbor") {
			t.Errorf("the log does not name topic-%s.cbor:\n%s", name, log.String())
		}
	}
}

// A failing disk is a 5.00, and the change is not made: nothing is
// acknowledged that is not stored.
func TestStoreFailureIsNotAcknowledged(t *testing.T) {
	fs := &failingStore{}
	r := newRig(t, nil, withStore(fs))
	_, dp := r.create(sensor("n"))
	r.publish(dp, 0, []byte("stored"))
	fs.fail = true
	wantCode(t, "publish on a failing disk", r.publish(dp, 0, []byte("lost")), coap.InternalServerError)
	wantCode(t, "create on a failing disk", r.req(coap.POST, "/ps", enc(t, sensor("m")), coap.ContentFormat, testCF), coap.InternalServerError)
	fs.fail = false
	if got := r.req(coap.GET, dp, nil); string(got.Payload) != "stored" {
		t.Fatalf("got %q", got.Payload)
	}
	r.create(sensor("m")) // the name was not taken by the failed attempt
}

type failingStore struct {
	memStore
	fail bool
}

func (f *failingStore) Save(string, []byte) error {
	if f.fail {
		return fmt.Errorf("pubsub: disk on fire")
	}
	return nil
}

// A state directory as the broker wrote it before its store moved to
// internal/filestore (testdata/state-v1, written by that code: a
// half-created topic, one with a COSE publication, one created with
// initialize, one whose data was deleted) loads whole; written again,
// every record is the same file, byte for byte, under the same name,
// mode 0600.
func TestStateDirectoryOfVersion1LoadsAndIsRewrittenByteForByte(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateDir = testutil.CopyDir(t, filepath.Join("testdata", "state-v1"))
	r := openRig(t, cfg)
	if st := r.b.Stats(); st.Topics != 4 || st.BadStateFiles != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := r.req(coap.GET, "/ps/data/2166eeab", nil)
	if cf, _ := got.Options.Uint(coap.ContentFormat); got.Code != coap.Content || cf != 18 || string(got.Payload) != "\xd2\x84\x40\xa0\x41\x00\x40" {
		t.Fatalf("the COSE publication: %v cf %d %x", got.Code, cf, got.Payload)
	}
	if got := r.req(coap.GET, "/ps/data/eb845645", nil); got.Code != coap.Content || string(got.Payload) != "21.5" {
		t.Fatalf("the initialized topic: %v %q", got.Code, got.Payload)
	}
	if m := dec(t, r.req(coap.GET, "/ps/0c534e23", nil).Payload); m[KeyMaxSubscribers] != uint64(7) || m[KeyTopicName] != "full" {
		t.Fatalf("configuration: %v", m)
	}
	wantCode(t, "half created", r.req(coap.GET, "/ps/data/37ceef4a", nil), coap.NotFound)
	wantCode(t, "data deleted", r.req(coap.GET, "/ps/data/cb7e4e20", nil), coap.NotFound)
	wantCode(t, "name taken", r.req(coap.POST, "/ps", enc(t, sensor("emptied")), coap.ContentFormat, testCF), coap.BadRequest)

	testutil.EmptyDir(t, cfg.StateDir) // written again by the code of now
	r.b.mu.Lock()
	topics := slices.Collect(maps.Values(r.b.topics))
	r.b.mu.Unlock()
	for _, tp := range topics {
		r.b.mu.Lock()
		if err := r.b.persistUnlock(tp, &tp.props, tp.full, tp.hasCF, tp.cf, tp.payload, tp.seq); err != nil {
			t.Fatal(err)
		}
	}
	testutil.SameFiles(t, cfg.StateDir, filepath.Join("testdata", "state-v1"), 0o600)
}
