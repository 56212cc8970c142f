package service

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket is the test's stand-in for systemd: a unixgram socket in
// t.TempDir() that NOTIFY_SOCKET points at.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "n")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

// next reads one notification, or "" when none arrives within d.
func next(t *testing.T, c *net.UnixConn, d time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifierWithoutNotifySocketDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	n, err := NewNotifier(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("enabled=%v interval=%v without NOTIFY_SOCKET", n.Enabled(), n.WatchdogInterval())
	}
	for name, f := range map[string]func() error{
		"Ready": n.Ready, "Reloading": n.Reloading, "Stopping": n.Stopping, "Watchdog": n.Watchdog,
		"Status": func() error { return n.Status("x") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run blocked without a watchdog")
	}
}

func TestNotifierReportsLifecycleToServiceManager(t *testing.T) {
	sock := notifySocket(t)
	n, err := NewNotifier(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Errorf("NOTIFY_SOCKET=%q left for child processes", v)
	}
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sock, 2*time.Second); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	n.Status("serving 2 listeners,\n1 radio")
	if got := next(t, sock, 2*time.Second); got != "STATUS=serving 2 listeners, 1 radio" {
		t.Fatalf("got %q", got)
	}

	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	before := ts.Nano() / 1000
	n.Reloading()
	got := next(t, sock, 2*time.Second)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > before+10_000_000 {
		t.Fatalf("MONOTONIC_USEC=%d, CLOCK_MONOTONIC was %d µs just before", usec, before)
	}
	n.Ready()
	if got := next(t, sock, 2*time.Second); got != "READY=1" {
		t.Fatalf("after reload got %q, want READY=1", got)
	}
	n.Stopping()
	if got := next(t, sock, 2*time.Second); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestWatchdogPingsOnlyWhileEveryLoopBeats(t *testing.T) {
	sock := notifySocket(t)
	const interval = 200 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := NewNotifier(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != interval {
		t.Fatalf("interval %v, want %v", n.WatchdogInterval(), interval)
	}
	idle := n.Heartbeat("idle") // stops on purpose: must not matter
	idle.Stop()
	h := n.Heartbeat("udp")

	// A loop that beats until told to pause.
	var mu sync.Mutex
	beating := true
	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-tk.C:
				mu.Lock()
				if beating {
					h.Beat()
				}
				mu.Unlock()
			}
		}
	}()
	defer func() { stopLoop(); <-loopDone }()

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitPings := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got := 0; got < want; {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d WATCHDOG=1 pings", got, want)
			}
			if next(t, sock, time.Second) == "WATCHDOG=1" {
				got++
			}
		}
	}
	waitPings(3)

	mu.Lock()
	beating = false
	mu.Unlock()
	// Pings in flight may still arrive; then the loop goes stale, Run says
	// so in STATUS, and from then on it withholds the pings.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("no STATUS=watchdog: ... naming the stale loop")
		}
		got := next(t, sock, time.Second)
		if strings.HasPrefix(got, "STATUS=watchdog:") && strings.Contains(got, "udp") {
			break
		}
	}
	for end := time.Now().Add(3 * interval); time.Now().Before(end); {
		if got := next(t, sock, 50*time.Millisecond); got == "WATCHDOG=1" {
			t.Fatal("watchdog pinged while a loop was stale")
		}
	}
	if err := n.Check(); !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "udp") {
		t.Fatalf("Check = %v, want ErrStale naming udp", err)
	}

	mu.Lock()
	beating = true
	mu.Unlock()
	waitPings(1)
}

func TestWatchdogForAnotherPIDIsOff(t *testing.T) {
	notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	n, err := NewNotifier(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 0 {
		t.Fatalf("interval %v for another PID's watchdog", n.WatchdogInterval())
	}
}

func TestBadWatchdogUSecIsAnError(t *testing.T) {
	notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, err := NewNotifier(Options{}); err == nil || !strings.HasPrefix(err.Error(), "service: ") {
		t.Fatalf("err = %v, want a service: error", err)
	}
}

// TestCheckJudgesHeartbeatsByTheClock pins the liveness rule with an
// injected clock: a loop is stale once it has not beaten for longer than
// the watchdog interval.
func TestCheckJudgesHeartbeatsByTheClock(t *testing.T) {
	notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	now := time.Unix(1000, 0)
	n, err := NewNotifier(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	radio := n.Heartbeat("radio")
	udp := n.Heartbeat("udp")
	steps := []struct {
		name    string
		advance time.Duration
		beat    []*Heartbeat
		stop    []*Heartbeat
		stale   []string // loops named in the error; nil: healthy
	}{
		{name: "fresh", stale: nil},
		{name: "at the limit", advance: 30 * time.Second, stale: nil},
		{name: "both past the limit", advance: time.Millisecond, stale: []string{"radio", "udp"}},
		{name: "radio beats", beat: []*Heartbeat{radio}, stale: []string{"udp"}},
		{name: "udp ends on purpose", stop: []*Heartbeat{udp}, stale: nil},
		{name: "radio stalls", advance: 31 * time.Second, stale: []string{"radio"}},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		for _, h := range s.beat {
			h.Beat()
		}
		for _, h := range s.stop {
			h.Stop()
		}
		err := n.Check()
		if s.stale == nil {
			if err != nil {
				t.Errorf("%s: Check = %v, want nil", s.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrStale) {
			t.Errorf("%s: Check = %v, want ErrStale", s.name, err)
			continue
		}
		for _, name := range s.stale {
			if !strings.Contains(err.Error(), name+" (") {
				t.Errorf("%s: %v does not name %s", s.name, err, name)
			}
		}
	}
}
