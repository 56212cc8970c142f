package plugins

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// bins are the test executables, built once per test binary.
var bins struct {
	dir        string
	echo, host string
	echoSum    string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.echo = filepath.Join(dir, "echoplugin")
	bins.host = filepath.Join(dir, "testhost")
	if err := build(bins.echo, "./testdata/echoplugin", bins.host, "./testdata/testhost"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	bins.echoSum = fileSum(bins.echo)
	minBackoff, maxBackoff = 50*time.Millisecond, time.Second
	// Whoever starts a goroutine stops it: after the tests, none of the
	// module's is left running.
	code := testutil.VerifyNoLeaks(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds pairs of (output, package) concurrently.
func build(pairs ...string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := exec.Command("go", "build", "-o", pairs[i], pairs[i+1]).CombinedOutput()
			if err != nil {
				errs[i/2] = fmt.Errorf("go build %s: %v\n%s", pairs[i+1], err, out)
			}
		}(i)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func echoConfig(name, scheme string) Config {
	return Config{Name: name, Path: bins.echo, SHA256: bins.echoSum, Config: map[string]any{"scheme": scheme}}
}

func newHost(t *testing.T, chain coap.Handler, cfgs ...Config) *Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h, err := New(ctx, cfgs, chain, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func translator(t *testing.T, h *Host, scheme string) *Translator {
	t.Helper()
	tr, ok := h.Translator(scheme)
	if !ok {
		t.Fatalf("no translator for %q; have %v", scheme, h.Schemes())
	}
	return tr
}

// copyExec copies the file at src to dir/name with mode.
func copyExec(t *testing.T, src, dir, name string, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestVerifyRefusesWrongChecksumNamingFileAndDigests(t *testing.T) {
	c := echoConfig("echo", "echo")
	c.SHA256 = strings.Repeat("ab", 32)
	err := Verify(c.Defaults())
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	for _, want := range []string{bins.echo, c.SHA256, bins.echoSum} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	c.SHA256 = bins.echoSum
	if err := Verify(c.Defaults()); err != nil {
		t.Fatalf("the right digest: %v", err)
	}
}

func TestVerifyRefusesGroupWritableOrNonExecutableFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		mode os.FileMode
		want string
	}{
		{"group-writable", 0o775, "writable"},
		{"not-executable", 0o644, "not executable"},
	} {
		c := echoConfig("echo", "echo")
		c.Path = copyExec(t, bins.echo, dir, tc.name, tc.mode)
		if err := Verify(c.Defaults()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// A [[plugin]] without sha256 is checked against the SHA256SUMS beside
// it, the list the package installs with its plugins: an upgrade that
// rebuilds a plugin brings the list that matches it.
func TestPluginWithoutSHA256IsCheckedAgainstTheListBesideIt(t *testing.T) {
	dir := t.TempDir()
	path := copyExec(t, bins.echo, dir, "gatewayd-echo", 0o755)
	list := filepath.Join(dir, SumsFile)
	c := Config{Name: "echo", Path: path, Config: map[string]any{"scheme": "echo"}}.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate without sha256: %v", err)
	}
	for _, tc := range []struct {
		name, list string
		mode       os.FileMode
		want       string // in the error; "" for none
	}{
		{"no list", "", 0, "no digest list"},
		{"not listed", bins.echoSum + "  gatewayd-other\n", 0o644, "does not list gatewayd-echo"},
		{"other digest", strings.Repeat("cd", 32) + "  gatewayd-echo\n", 0o644, list + " says " + strings.Repeat("cd", 32)},
		{"writable list", bins.echoSum + "  gatewayd-echo\n", 0o666, "writable"},
		{"malformed", "not a digest line\n", 0o644, list + ":1"},
		{"listed", "# shipped plugins\n" + strings.Repeat("cd", 32) + "  gatewayd-other\n" + bins.echoSum + " *gatewayd-echo\n", 0o644, ""},
	} {
		os.Remove(list)
		if tc.list != "" {
			if err := os.WriteFile(list, []byte(tc.list), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(list, tc.mode)
		}
		err := Verify(c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	// And it runs.
	h := newHost(t, nil, c)
	if _, err := translator(t, h, "echo").RoundTrip(t.Context(), "echo://n/", &coap.Message{Code: coap.GET}); err != nil {
		t.Fatal(err)
	}
}

// A plugin that cannot start does not fail the Host: it is logged at
// error level and reported down, its scheme (unknown until it starts) is
// answered 5.03 with Max-Age while the other plugins serve, and it comes
// up by itself once its file is right, through the backoff retries.
func TestPluginThatCannotStartIsRetriedWhileTheOthersServe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "echoplugin")
	// At first a file with another digest: the test host's executable.
	copyExec(t, bins.host, dir, "echoplugin", 0o755)
	if fileSum(path) == bins.echoSum {
		t.Fatal("the stand-in has the plugin's digest")
	}
	late := echoConfig("late", "late")
	late.Path = path
	var buf syncLog
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h, err := New(ctx, []Config{echoConfig("echo", "echo"), late}, nil, log)
	if err != nil {
		t.Fatalf("New failed for a plugin that cannot start: %v", err)
	}
	t.Cleanup(func() { h.Close() })

	st := h.Stats()[1]
	if st.Up || !strings.Contains(st.LastError, "sha256 mismatch") || st.Failures == 0 || st.RetryAt.IsZero() {
		t.Fatalf("stats of the plugin that cannot start: %+v", st)
	}
	if s := buf.String(); !regexp.MustCompile(`level=ERROR msg="plugin cannot start[^\n]*plugin=late`).MatchString(s) {
		t.Fatalf("no error-level line for the plugin:\n%s", s)
	}
	req := &coap.Message{Code: coap.GET}
	if _, err := translator(t, h, "echo").RoundTrip(t.Context(), "echo://n/", req); err != nil {
		t.Fatalf("the other plugin: %v", err)
	}
	_, err = translator(t, h, "late").RoundTrip(t.Context(), "late://n/", req)
	var ce *coap.Error
	if !errors.As(err, &ce) || ce.Code != coap.ServiceUnavailable || ce.MaxAge < 1 {
		t.Fatalf("the plugin's scheme while it cannot start: err = %v, want 5.03 with Max-Age", err)
	}

	// The right file arrives, as an upgrade puts it: renamed into place.
	copyExec(t, bins.echo, dir, "echoplugin.new", 0o755)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	_, up := h.plugins[1].current()
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatalf("the plugin did not come up by itself: %+v", h.Stats()[1])
	}
	resp, err := translator(t, h, "late").RoundTrip(t.Context(), "late://n/", &coap.Message{Code: coap.GET, Payload: []byte("hi")})
	if err != nil || string(resp.Payload) != "hi" {
		t.Fatalf("after it came up: %v %v", resp, err)
	}
	if _, ok := h.Translator("nobody"); ok {
		t.Error("a scheme nobody serves still has a translator once every plugin is up")
	}
	if st := h.Stats()[1]; !st.Up || st.Starts != 1 || !st.RetryAt.IsZero() {
		t.Errorf("stats once up: %+v", st)
	}
}

func TestRoundTripIsByteExact(t *testing.T) {
	h := newHost(t, nil, echoConfig("echo", "echo"))
	tr := translator(t, h, "echo")
	payload := make([]byte, 1024)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	req := &coap.Message{Type: coap.Confirmable, Code: coap.POST, MID: 1, Token: []byte{9},
		Options: coap.Options{
			{ID: coap.URIPath, Value: []byte("a")},
			{ID: coap.ContentFormat, Value: []byte{0xff, 0x00}},
			{ID: 65000, Value: []byte{0, 1, 2, 0xc0, 0xdb}}, // unknown, elective: kept raw
		},
		Payload: payload}
	resp, err := tr.RoundTrip(t.Context(), "echo://node/a", req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != coap.Content || !bytes.Equal(resp.Payload, payload) || !resp.Options.Equal(req.Options) {
		t.Fatalf("resp = %v, options %v; want the request's payload and options", resp, resp.Options)
	}
}

func TestPluginErrorsAndPanicsAreErrorsNotCrashes(t *testing.T) {
	h := newHost(t, nil, echoConfig("echo", "echo"))
	tr := translator(t, h, "echo")
	req := &coap.Message{Code: coap.GET}
	_, err := tr.RoundTrip(t.Context(), "echo://x/fail", req)
	var ce *coap.Error
	if !errors.As(err, &ce) || ce.Code != coap.GatewayTimeout {
		t.Errorf("fail: err = %v, want the plugin's 5.04", err)
	}
	_, err = tr.RoundTrip(t.Context(), "echo://x/panic", req)
	if !errors.Is(err, ErrPlugin) {
		t.Errorf("panic: err = %v, want ErrPlugin", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err = tr.RoundTrip(ctx, "echo://x/slow", req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow: err = %v, want the deadline", err)
	}
	if _, err := tr.RoundTrip(t.Context(), "echo://x/ok", req); err != nil {
		t.Errorf("after all that: %v", err)
	}
	if s := h.Stats()[0]; s.Restarts != 0 {
		t.Errorf("restarts = %d, want 0: a panic in a call is no crash", s.Restarts)
	}
}

func TestKilledPluginRestartsWhileOthersServe(t *testing.T) {
	h := newHost(t, nil, echoConfig("a", "a"), echoConfig("b", "b"))
	ta, tb := translator(t, h, "a"), translator(t, h, "b")
	req := &coap.Message{Code: coap.GET, Payload: []byte("x")}
	pid := h.Stats()[0].PID
	if pid == 0 {
		t.Fatal("no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var saw503 bool
	defer func() {
		if t.Failed() {
			t.Logf("saw 5.03: %v; stats %+v", saw503, h.Stats()[0])
		}
	}()
	testutil.EventuallyWithin(t, 20*time.Second, "plugin a back (a new process, one restart)", func() bool {
		if _, err := tb.RoundTrip(t.Context(), "b://n/", req); err != nil {
			t.Fatalf("b failed while a was down: %v", err)
		}
		_, err := ta.RoundTrip(t.Context(), "a://n/", req)
		if err == nil {
			// Or the old process, before its death was noticed.
			s := h.Stats()[0]
			return s.PID != pid && s.Restarts == 1
		}
		var ce *coap.Error
		if !errors.As(err, &ce) || ce.Code != coap.ServiceUnavailable || ce.MaxAge < 1 {
			t.Fatalf("a while down: err = %v, want 5.03 with Max-Age", err)
		}
		saw503 = true
		return false
	})
	if !saw503 {
		t.Error("never saw 5.03 while a was down")
	}
	if s := h.Stats()[0]; s.Unavail == 0 || s.Starts != 2 {
		t.Errorf("stats = %+v, want unavailable requests and 2 starts", s)
	}
}

// A call made while the supervisor closes the connection of a process
// it saw die fails with Canceled ("the client connection is closing")
// though the caller's ctx is live: the plugin is down, 5.03 with Max-Age,
// as when the connection breaks under the call. A cancelled ctx stays the
// caller's own error, and other codes stay the plugin's fault.
func TestCallErrorWhenThePluginGoesAway(t *testing.T) {
	p := &plug{cfg: Config{Name: "x"}}
	p.retryAt = time.Now().Add(time.Second)
	for _, c := range []codes.Code{codes.Unavailable, codes.Canceled} {
		var ce *coap.Error
		err := p.callError(t.Context(), "round trip", status.Error(c, "grpc: the client connection is closing"))
		if !errors.As(err, &ce) || ce.Code != coap.ServiceUnavailable || ce.MaxAge < 1 {
			t.Errorf("%v: err = %v, want 5.03 with Max-Age", c, err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.callError(ctx, "round trip", status.Error(codes.Canceled, "context canceled")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v, want context.Canceled", err)
	}
	if err := p.callError(t.Context(), "round trip", status.Error(codes.Internal, "boom")); !errors.Is(err, ErrPlugin) {
		t.Errorf("Internal: err = %v, want ErrPlugin", err)
	}
}

func TestUnavailableCarriesMaxAge(t *testing.T) {
	p := &plug{cfg: Config{Name: "x"}}
	p.retryAt = time.Now().Add(2500 * time.Millisecond)
	var ce *coap.Error
	if !errors.As(p.unavailable(), &ce) || ce.Code != coap.ServiceUnavailable || ce.MaxAge != 3 {
		t.Fatalf("err = %#v, want 5.03 Max-Age 3", ce)
	}
	if m := ce.Response(); !m.Options.Has(coap.MaxAge) {
		t.Fatal("response has no Max-Age")
	}
}

func TestFrontEndDoReachesTheChain(t *testing.T) {
	type seen struct {
		peer   netip.AddrPort
		secure bool
		path   string
		body   string
	}
	got := make(chan seen, 1)
	chain := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		p, _ := r.Msg.Options.Get(coap.URIPath)
		got <- seen{r.Peer, r.Secure, string(p), string(r.Msg.Payload)}
		return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: []byte("hello, plugin")})
	})
	c := echoConfig("fe", "fe")
	c.Config["front_end"] = true
	h := newHost(t, chain, c)
	select {
	case s := <-got:
		if !peerPrefix.Contains(s.peer.Addr()) || !s.secure || s.path != "hello" || s.body != "from-plugin" {
			t.Errorf("chain saw %+v", s)
		}
		if s.peer != h.Stats()[0].Peer {
			t.Errorf("peer %v, stats say %v", s.peer, h.Stats()[0].Peer)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the front end's request never reached the chain")
	}
	tr := translator(t, h, "fe")
	testutil.Eventually(t, "the front end's response", func() bool {
		resp, err := tr.RoundTrip(t.Context(), "fe://x/frontend", &coap.Message{Code: coap.GET})
		if err == nil && (string(resp.Payload) != "hello, plugin" || resp.Code != coap.Content) {
			t.Fatalf("front end got %v %q", resp, resp.Payload)
		}
		return err == nil
	})
	if h.Stats()[0].Callbacks != 1 {
		t.Errorf("callbacks = %d, want 1", h.Stats()[0].Callbacks)
	}
}

// A chain may answer a front end's request after it returned (the stage
// contract's coap.ErrLater): the host waits for the answer's Finish.
func TestFrontEndGetsAnAnswerTheChainGivesLater(t *testing.T) {
	returned := make(chan struct{})
	chain := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		return coap.Later(ctx, func() {
			go func() {
				<-returned // strictly after the chain returned ErrLater
				w.WriteResponse(&coap.Message{Code: coap.Content, Payload: []byte("later, plugin")})
				coap.Finish(w, nil)
			}()
		})
	})
	var once sync.Once
	c := echoConfig("fe", "fe")
	c.Config["front_end"] = true
	h := newHost(t, coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		err := chain.ServeCoAP(ctx, w, r)
		once.Do(func() { close(returned) })
		return err
	}), c)
	tr := translator(t, h, "fe")
	testutil.Eventually(t, "the front end's response", func() bool {
		resp, err := tr.RoundTrip(t.Context(), "fe://x/frontend", &coap.Message{Code: coap.GET})
		if err == nil && (string(resp.Payload) != "later, plugin" || resp.Code != coap.Content) {
			t.Fatalf("front end got %v %q", resp, resp.Payload)
		}
		return err == nil
	})
}

func TestChainErrorBecomesResponseForFrontEnd(t *testing.T) {
	chain := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		panic("a broken chain")
	})
	c := echoConfig("fe", "fe")
	c.Config["front_end"] = true
	h := newHost(t, chain, c)
	tr := translator(t, h, "fe")
	testutil.Eventually(t, "an answer to the front end", func() bool {
		_, err := tr.RoundTrip(t.Context(), "fe://x/frontend", &coap.Message{Code: coap.GET})
		var ce *coap.Error
		if errors.As(err, &ce) && ce.Code == coap.ServiceUnavailable {
			return false
		}
		if err == nil || !strings.Contains(err.Error(), "panic") {
			t.Fatalf("err = %v, want the host's panic reported to the plugin", err)
		}
		return true
	})
}

func TestObserveStreamsNotificationsAndStops(t *testing.T) {
	h := newHost(t, nil, echoConfig("echo", "echo"))
	tr := translator(t, h, "echo")
	notes := make(chan *coap.Message, 100)
	req := &coap.Message{Code: coap.GET, Options: coap.Options(nil).SetUint(coap.Observe, 0)}
	first, stop, err := tr.Observe(t.Context(), "echo://n/obs", req, func(m *coap.Message) {
		select {
		case notes <- m:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Payload) != "0" {
		t.Fatalf("first = %q", first.Payload)
	}
	for range 3 {
		select {
		case n := <-notes:
			if n.Code != coap.Content || !n.Options.Has(coap.Observe) {
				t.Fatalf("notification %v", n)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notification")
		}
	}
	if err := stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestObservationEndsWith503WhenPluginDies(t *testing.T) {
	h := newHost(t, nil, echoConfig("echo", "echo"))
	tr := translator(t, h, "echo")
	ended := make(chan *coap.Message, 1)
	req := &coap.Message{Code: coap.GET, Options: coap.Options(nil).SetUint(coap.Observe, 0)}
	_, stop, err := tr.Observe(t.Context(), "echo://n/obs", req, func(m *coap.Message) {
		if m.Code != coap.Content {
			ended <- m
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t.Context())
	syscall.Kill(h.Stats()[0].PID, syscall.SIGKILL)
	select {
	case m := <-ended:
		if m.Code != coap.ServiceUnavailable || !m.Options.Has(coap.MaxAge) {
			t.Fatalf("last notification %v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("observation did not end")
	}
}

func TestNoOrphanAfterHostIsKilled(t *testing.T) {
	cmd := exec.Command(bins.host, bins.echo, bins.echoSum)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the plugin pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		t.Fatalf("pid line %q", line)
	}
	if !alive(pid) {
		t.Fatalf("plugin %d not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	testutil.Eventually(t, fmt.Sprintf("plugin %d to end with its host", pid), func() bool { return !alive(pid) })
}

// alive reports whether pid runs: it exists and is no zombie (an orphan
// killed by Pdeathsig is reaped by whatever init the container has, maybe
// never).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func TestCloseIsIdempotentAndStopsPlugins(t *testing.T) {
	h := newHost(t, nil, echoConfig("echo", "echo"))
	pid := h.Stats()[0].PID
	h.Close()
	h.Close()
	if alive(pid) {
		t.Errorf("plugin %d still running after Close", pid)
	}
	_, err := translator(t, h, "echo").RoundTrip(t.Context(), "echo://x/", &coap.Message{Code: coap.GET})
	var ce *coap.Error
	if !errors.As(err, &ce) || ce.Code != coap.ServiceUnavailable {
		t.Errorf("after Close: err = %v, want 5.03", err)
	}
}

// A plugin's own warning on stderr reaches gatewayd's log as a warning:
// go-plugin alone would log it at Debug, below gatewayd's default level.
func TestPluginStderrWarningIsLoggedAsWarning(t *testing.T) {
	var buf syncLog
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h, err := New(ctx, []Config{echoConfig("echo", "echo")}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if _, err := translator(t, h, "echo").RoundTrip(t.Context(), "echo://node/warn", &coap.Message{Code: coap.GET, Payload: []byte("disk almost full")}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("the log:\n%s", buf.String())
		}
	}()
	testutil.Eventually(t, "the plugin's warning in the log", func() bool {
		s := buf.String()
		return strings.Contains(s, "level=WARN") && strings.Contains(s, "disk almost full") && strings.Contains(s, "plugin=echo")
	})
}

// A plugin line is clipped, and a line split over writes is one record.
func TestStderrLogJoinsAndClipsLines(t *testing.T) {
	var buf syncLog
	w := &stderrLog{log: slog.New(slog.NewTextHandler(&buf, nil)), lim: newLogLimiter(time.Now)}
	w.Write([]byte("[ERROR] half"))
	w.Write([]byte(" and half"))
	w.Write([]byte("\n"))
	w.Write([]byte(strings.Repeat("x", 5000) + "\n{\"@level\":\"info\"}\n"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "half and half") ||
		len(lines[1]) > maxLogLine+200 || !strings.Contains(lines[1], "…") {
		t.Fatalf("log:\n%s", buf.String())
	}
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A plugin that writes without end fills gatewayd's log with no more than
// the burst and then the rate; what it loses is counted and told once.
func TestPluginLogIsRateLimited(t *testing.T) {
	var buf syncLog
	now := time.Unix(1000, 0)
	lim := newLogLimiter(func() time.Time { return now })
	w := &stderrLog{log: slog.New(slog.NewTextHandler(&buf, nil)), lim: lim}
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if n := strings.Count(buf.String(), "plugin output"); n != logBurst {
		t.Fatalf("%d lines logged at once, want the burst of %d", n, logBurst)
	}
	if got := lim.dropped.Load(); got != 1000-logBurst {
		t.Fatalf("dropped %d, want %d", got, 1000-logBurst)
	}
	// A second later there is room for logRate lines, and the first of
	// them comes after one warning with the count.
	now = now.Add(time.Second)
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(w, "more %d\n", i)
	}
	out := buf.String()
	if n := strings.Count(out, "plugin output"); n != logBurst+logRate {
		t.Fatalf("%d lines logged after a second, want %d", n, logBurst+logRate)
	}
	if strings.Count(out, "plugin log lines dropped") != 1 || !strings.Contains(out, fmt.Sprintf("dropped=%d", 1000-logBurst)) {
		t.Fatalf("no single notice of the %d dropped lines:\n%s", 1000-logBurst, out[len(out)-600:])
	}
	// go-plugin's own log goes through the same bucket.
	hw := &logWriter{log: slog.New(slog.NewTextHandler(&buf, nil)), lim: lim}
	hw.Write([]byte("[INFO] plugin: hello\n"))
	if strings.Contains(buf.String(), "hello") {
		t.Fatal("go-plugin's log passed an empty bucket")
	}
	if got := lim.dropped.Load(); got != 2*1000-logBurst-logRate+1 {
		t.Fatalf("dropped %d in all, want %d", got, 2*1000-logBurst-logRate+1)
	}
}

// A flood on the plugin's stdio stream does not crowd out what its process
// writes to its own stderr: a panic's trace has a bucket of its own.
func TestPluginCrashOutputHasItsOwnBucket(t *testing.T) {
	var buf syncLog
	h := &Host{log: slog.New(slog.NewTextHandler(&buf, nil))}
	p := newPlug(h, Config{Name: "noisy"}, 0)
	// A clock that stands still: no token comes back while the test
	// writes, however slow the machine.
	still := time.Now()
	p.logs = newLogLimiter(func() time.Time { return still })
	p.crash = newLogLimiter(func() time.Time { return still })
	_, errs, crash := p.stdio()
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(errs, "chatter %d\n", i)
	}
	fmt.Fprint(crash, "panic: runtime error: index out of range\n\ngoroutine 1 [running]:\nmain.main()\n")
	out := buf.String()
	for _, want := range []string{"panic: runtime error", "goroutine 1 [running]", "main.main()"} {
		if !strings.Contains(out, want) {
			t.Errorf("the crash line %q was dropped", want)
		}
	}
	if got := p.stats().LogDropped; got != 1000-logBurst {
		t.Fatalf("LogDropped %d, want %d", got, 1000-logBurst)
	}
}
