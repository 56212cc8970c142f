package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Every test that runs gatewayd starts it with startGatewayd: in this
// process through run, or, with asBinary, the command built once per test
// run, for what only a process of its own shows (signals, systemd's
// notify socket and socket activation, what happens to plugins when the
// daemon dies). The starter writes the configuration, keeps the log,
// waits for gatewayd to say it started and stops it when the test ends.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary gatewaydBinary built, if it did.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// gatewaydBinary builds the command once per test run.
func gatewaydBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gatewayd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gatewayd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once,
// which a reader can wait on for what it expects (a log line).
type syncBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	grew chan struct{} // guarded by mu: closed at the next Write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew != nil {
		close(s.grew)
		s.grew = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// holds reports whether cond holds of the content, and if not, returns a
// channel closed at the next Write.
func (s *syncBuffer) holds(cond func([]byte) bool) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cond(s.b.Bytes()) {
		return true, nil
	}
	if s.grew == nil {
		s.grew = make(chan struct{})
	}
	return false, s.grew
}

// waitUntil waits, a Write at a time, until cond holds of the content,
// failing t with what and the content if d passes first or ended is
// closed (the writer is gone) without it.
func (s *syncBuffer) waitUntil(t *testing.T, d time.Duration, what string, ended <-chan struct{}, cond func([]byte) bool) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		ok, grew := s.holds(cond)
		if ok {
			return
		}
		select {
		case <-grew:
		case <-ended:
			if ok, _ := s.holds(cond); ok {
				return
			}
			t.Fatalf("gatewayd exited before %s:\n%s", what, s.String())
		case <-timeout.C:
			t.Fatalf("no %s within %v:\n%s", what, d, s.String())
		}
	}
}

// until calls try until it returns nil, failing t with what and try's
// last error after d: for a request that may meet a radio or a plugin
// still coming up, or a frame the simulated radio lost.
func until(t *testing.T, d time.Duration, what string, try func() error) {
	t.Helper()
	var last error
	defer func() {
		if t.Failed() && last != nil {
			t.Logf("%s: the last try: %v", what, last)
		}
	}()
	testutil.EventuallyWithin(t, d, what, func() bool {
		last = try()
		return last == nil
	})
}

// startTimeout is how long a start may take, generous for a busy machine.
const startTimeout = 15 * time.Second

// startOptions are what differs between the ways tests run gatewayd.
type startOptions struct {
	binary bool     // run the built command in a process of its own
	args   []string // after -config
	env    []string // added to the process's environment
	files  []*os.File
	// listenPID has a shell set LISTEN_PID to the process's own pid
	// before it execs gatewayd: the pid is known only after the fork.
	listenPID bool
	noWait    bool // return without waiting for gatewayd to start
}

type startOption func(*startOptions)

// notWaitingToStart returns at once, for a start that is to fail: the
// test waits for the exit (instance.wait).
func notWaitingToStart() startOption { return func(o *startOptions) { o.noWait = true } }

// asBinary runs the built command instead of run in this process.
func asBinary() startOption { return func(o *startOptions) { o.binary = true } }

// debugLog logs at debug level.
func debugLog() startOption {
	return func(o *startOptions) { o.args = append(o.args, "-log-level", "debug") }
}

// withEnv adds variables (NOTIFY_SOCKET, WATCHDOG_USEC) to the binary's
// environment.
func withEnv(kv ...string) startOption {
	return func(o *startOptions) { o.binary, o.env = true, append(o.env, kv...) }
}

// socketActivated passes files to the binary as systemd passes the
// sockets of a socket unit (sd_listen_fds(3)): from fd 3 on, with
// LISTEN_FDS, LISTEN_FDNAMES (names joined by ':') and LISTEN_PID. The
// files are closed in this process once the binary has them.
func socketActivated(names string, files ...*os.File) startOption {
	return func(o *startOptions) {
		o.binary, o.listenPID, o.files = true, true, files
		o.env = append(o.env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+names)
	}
}

// instance is a gatewayd a test started.
type instance struct {
	log    *syncBuffer // its standard error: the log, plugins' lines included
	out    *syncBuffer // its standard output: the demo's banner
	config string      // the configuration file's path; "" for the demo
	cmd    *exec.Cmd   // the process, for a binary; nil in this process
	cancel context.CancelFunc
	exited chan struct{} // closed once run returned or the process was reaped
	err    error         // what run or Wait returned; read once exited is closed
}

// stopTimeout is how long a stopped gatewayd may take to exit here,
// generous for a busy machine; TestBinaryStopsOnSIGTERMOrSIGINT holds it
// to the 5 s its unit allows.
const stopTimeout = 10 * time.Second

// startGatewayd writes config to a file, starts gatewayd with it (with
// no -config when config is "": the built-in demo) and, unless
// notWaitingToStart, waits until it logs that it started, failing t if
// it exits first or takes longer than startTimeout. When the test ends gatewayd is stopped (ctx cancelled, or
// SIGTERM for the binary) and must exit cleanly within stopTimeout,
// unless the test saw it exit already.
func startGatewayd(t *testing.T, config string, opts ...startOption) *instance {
	t.Helper()
	var o startOptions
	for _, opt := range opts {
		opt(&o)
	}
	g := &instance{log: &syncBuffer{}, out: &syncBuffer{}, exited: make(chan struct{})}
	var args []string
	if config != "" {
		g.config = writeFile(t, "gatewayd.toml", config)
		args = []string{"-config", g.config}
	}
	args = append(args, o.args...)
	if o.binary {
		g.startProcess(t, o, args)
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		g.cancel = cancel
		go func() {
			g.err = run(ctx, args, g.out, g.log)
			close(g.exited)
		}()
	}
	t.Cleanup(func() {
		if g.cancel != nil {
			defer g.cancel()
		}
		if g.ended() {
			return
		}
		if err := g.stop(t); err != nil {
			t.Errorf("gatewayd's exit when the test ended: %v", err)
		}
	})
	if !o.noWait {
		g.waitLog(t, "gatewayd started", startTimeout)
	}
	return g
}

func (g *instance) startProcess(t *testing.T, o startOptions, args []string) {
	t.Helper()
	bin := gatewaydBinary(t)
	g.cmd = exec.Command(bin, args...)
	if o.listenPID {
		g.cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin}, args...)...)
	}
	g.cmd.Env = append(os.Environ(), o.env...)
	g.cmd.ExtraFiles = o.files
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.log
	err := g.cmd.Start()
	for _, f := range o.files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.exited)
	}()
}

// ended reports whether gatewayd has exited.
func (g *instance) ended() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// pid is the process gatewayd runs in: this one, or the binary's.
func (g *instance) pid() int {
	if g.cmd == nil {
		return os.Getpid()
	}
	return g.cmd.Process.Pid
}

// signal sends sig to the binary.
func (g *instance) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if g.cmd == nil {
		t.Fatalf("signal %v to gatewayd in this process", sig)
	}
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits up to d for gatewayd to exit and returns what run or the
// process returned; past d it kills the binary and fails t.
func (g *instance) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-g.exited:
		return g.err
	case <-time.After(d):
		if g.cmd != nil {
			g.cmd.Process.Kill()
			<-g.exited
		}
		t.Fatalf("gatewayd did not exit within %v:\n%s", d, g.log.String())
		return nil
	}
}

// stop stops gatewayd as its service manager would (ctx cancelled, or
// SIGTERM for the binary) and waits up to stopTimeout for it to exit.
func (g *instance) stop(t *testing.T) error {
	t.Helper()
	if g.cmd == nil {
		g.cancel()
	} else if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil && !g.ended() {
		t.Fatal(err)
	}
	return g.wait(t, stopTimeout)
}

// waitLog waits until the log holds want, failing t with the log if d
// passes first or gatewayd exits.
// adminAddr is the address the admin endpoint bound, from the line
// gatewayd logs before it reports that it started. Tests configure
// [metrics] listen = "127.0.0.1:0": a port chosen free beforehand may be
// taken by another process before gatewayd binds it, and gatewayd only
// logs a busy admin port.
func (g *instance) adminAddr(t *testing.T) string {
	t.Helper()
	for line := range strings.Lines(g.log.String()) {
		if !strings.Contains(line, `msg="admin endpoint"`) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				return a
			}
		}
	}
	t.Fatalf("gatewayd logged no admin endpoint:\n%s", g.log.String())
	return ""
}

func (g *instance) waitLog(t *testing.T, want string, d time.Duration) {
	t.Helper()
	g.waitOutput(t, g.log, want, d)
}

// waitOutput waits until on, the log or the standard output, holds
// want, failing t with it if d passes first or gatewayd exits.
func (g *instance) waitOutput(t *testing.T, on *syncBuffer, want string, d time.Duration) {
	t.Helper()
	on.waitUntil(t, d, fmt.Sprintf("%q from gatewayd", want), g.exited, func(b []byte) bool { return bytes.Contains(b, []byte(want)) })
}
