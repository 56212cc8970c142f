package spinel_test

import (
	"context"
	"errors"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// logTap is a slog.Handler that keeps the driver's records.
type logTap struct {
	mu   sync.Mutex
	recs []slog.Record // guarded by mu
}

func (l *logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l *logTap) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logTap) WithGroup(string) slog.Handler            { return l }
func (l *logTap) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}

// mark returns a position in the log, for since.
func (l *logTap) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// since returns the records after mark whose message is one of msgs.
func (l *logTap) since(mark int, msgs ...string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs[mark:] {
		if slices.Contains(msgs, r.Message) {
			out = append(out, r)
		}
	}
	return out
}

// retryIn is the delay a supervisor record announces.
func retryIn(r slog.Record) time.Duration {
	var d time.Duration
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			d = a.Value.Duration()
		}
		return true
	})
	return d
}

// The device path disappears (the dongle is pulled) and comes back, five
// times. While it is away the driver looks for it every BackoffMin without
// backing off, however long it stays away, and says so once at info; when
// it is back, the link is up and carries frames again. The time from the
// path's return to the link up and to the first frame sent is logged.
func TestDevicePathGoneAndBack(t *testing.T) {
	tap := &logTap{}
	r := newRig(t, sim.RCPConfig{}, func(c *spinel.Config) { c.Logger = slog.New(tap) })
	cfg := testConfig(r.port.Path())
	var worst time.Duration
	for round := 1; round <= 5; round++ {
		mark := tap.mark()
		retries := r.d.Stats().Retries
		if err := r.port.Unplug(); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWithin(t, 30*time.Second, "unplug noticed", func() bool { return r.d.State() == spinel.StateDown })
		if err := r.d.Send(ctxT(t), dataFrame(1, false, "x")); !errors.Is(err, radio.ErrDown) {
			t.Fatalf("Send while unplugged = %v, want ErrDown", err)
		}
		// Away long enough for a backoff to have grown to its cap
		// (10, 20, ..., 200 ms takes 5 attempts).
		testutil.EventuallyWithin(t, 30*time.Second, "a dozen looks for the device", func() bool { return r.d.Stats().Retries >= retries+12 })
		looks := tap.since(mark, "rcp not available")
		infos := 0
		for _, rec := range looks {
			if d := retryIn(rec); d != cfg.BackoffMin {
				t.Fatalf("round %d: looking again in %v while the device is absent, want BackoffMin %v", round, d, cfg.BackoffMin)
			}
			if rec.Level == slog.LevelWarn {
				infos++
			}
		}
		if infos != 1 {
			t.Errorf("round %d: %d warnings for %d identical failures, want 1", round, infos, len(looks))
		}

		plugged := time.Now()
		if err := r.port.Plug(); err != nil {
			t.Fatal(err)
		}
		waitUp(t, r.d)
		up := time.Since(plugged)
		if err := r.d.Send(ctxT(t), dataFrame(byte(round), true, "back")); err != nil {
			t.Fatalf("round %d: Send after replug = %v", round, err)
		}
		sent := time.Since(plugged)
		worst = max(worst, sent)
		t.Logf("round %d: device back → link up in %v, first frame sent in %v (BackoffMin %v)", round, up.Round(time.Millisecond), sent.Round(time.Millisecond), cfg.BackoffMin)
	}
	if st := r.d.Stats(); st.Reconnects != 5 {
		t.Errorf("stats %+v, want 5 reconnects", st)
	}
	t.Logf("worst of 5: %v from the device's return to a frame sent", worst.Round(time.Millisecond))
}

// An RCP that resets each time it is set up (a crash loop), at once or
// soon after the link comes up, is retried ever more slowly up to
// BackoffMax, never in a tight loop, with no goroutine or descriptor left
// behind by its many sessions; once it stops resetting, the link comes
// back and works. The time from its last reset to the link up is logged.
func TestRCPResettingInALoop(t *testing.T) {
	for _, tt := range []struct {
		name  string
		delay time.Duration
	}{
		{"as the radio switches on", 0},
		{"soon after the link is up", 30 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) { testResetLoop(t, tt.delay) })
	}
}

func testResetLoop(t *testing.T, delay time.Duration) {
	// Warm up what stays for the process (poller, timers) before counting.
	func() {
		r := newRig(t, sim.RCPConfig{}, nil)
		r.d.Close()
		r.port.Close()
	}()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)

	tap := &logTap{}
	air := sim.NewAir(sim.AirConfig{})
	rcp := sim.NewRCP(sim.RCPConfig{}, air)
	port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(port.Path())
	cfg.Logger = slog.New(tap)
	if delay > 0 {
		// A link that stays up for BackoffMax counts as stable and starts
		// the backoff over. The RCP resets delay after coming up, but on a
		// loaded machine its timer, the pty and the driver can take longer
		// than the test's usual 200 ms: give the classification a margin
		// no scheduler stall reaches.
		cfg.BackoffMax = time.Second
	}
	d, err := spinel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close(); port.Close(); rcp.Leave() }()
	waitUp(t, d)

	mark := tap.mark()
	rcp.SetFaults(sim.Faults{ResetOnRadioOn: true, ResetDelay: delay})
	rcp.Reset(spinel.StatusResetWatchdog) // the first of the loop
	testutil.EventuallyWithin(t, 30*time.Second, "4 resets", func() bool { return rcp.Stats().SelfResets >= 4 })
	g4, fd4 := runtime.NumGoroutine(), openFDs(t)
	testutil.EventuallyWithin(t, 30*time.Second, "12 resets", func() bool { return rcp.Stats().SelfResets >= 12 })
	// A sample catches a session at some point of its life (port open or
	// not, reader and writer started or gone), so one sample may differ
	// from another by a session's worth. The loop goes on cycling: the
	// counts must come back to the fourth reset's at some moment, which
	// eight sessions' leaks would never let them do.
	var g12, fd12 int
	testutil.EventuallyWithin(t, 30*time.Second, "descriptors and goroutines at the fourth reset's", func() bool {
		g12, fd12 = runtime.NumGoroutine(), openFDs(t)
		return fd12 <= fd4 && g12 <= g4
	})
	t.Logf("over 8 more resets: descriptors %d → %d, goroutines %d → %d", fd4, fd12, g4, g12)
	var delays []time.Duration
	for _, rec := range tap.since(mark, "rcp not available", "rcp link lost soon after coming up", "rcp link lost") {
		delays = append(delays, retryIn(rec))
	}
	t.Logf("retry delays through the reset loop: %v", delays)
	if n := len(delays); n < 8 || slices.Max(delays) != cfg.BackoffMax || delays[n-1] != cfg.BackoffMax || delays[n-2] != cfg.BackoffMax {
		t.Fatalf("retry delays %v: want them to grow to BackoffMax %v and stay", delays, cfg.BackoffMax)
	}
	flaps := len(tap.since(mark, "rcp link lost soon after coming up"))
	if len(tap.since(mark, "rcp link lost")) > 1 {
		t.Errorf("a link lost soon after coming up was taken for a stable one")
	}
	t.Logf("%d of the failures were a link up and lost again", flaps)
	if delay > 0 && flaps < 6 {
		t.Errorf("%d flaps: the RCP was to reset after the link came up", flaps)
	}

	stopped := time.Now()
	rcp.SetFaults(sim.Faults{})
	testutil.EventuallyWithin(t, 30*time.Second, "the link up with the resets over", func() bool {
		return d.State() == spinel.StateUp && d.Send(ctxT(t), dataFrame(1, false, "x")) == nil
	})
	t.Logf("the RCP stopped resetting → link up and a frame sent in %v (BackoffMax %v)", time.Since(stopped).Round(time.Millisecond), cfg.BackoffMax)
	if _, _, _, _, raw := rcp.Radio(); !raw {
		t.Fatal("up on an RCP whose raw stream is off: a reset was taken for the bring-up's")
	}
	if !rcp.Deliver(radio.Frame{Data: []byte{0x41, 0x88, 9}, RSSI: -50, LQI: 100}) {
		t.Fatal("rcp did not deliver")
	}
	for {
		f, err := d.Recv(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Data) == 3 && f.Data[2] == 9 {
			break
		}
	}

	d.Close()
	port.Close()
	rcp.Leave()
	testutil.EventuallyWithin(t, 30*time.Second, "goroutines and fds back to baseline", func() bool {
		return runtime.NumGoroutine() <= g0 && openFDs(t) <= fd0
	})
}

// benchDriver runs the driver with its default timing (BackoffMin 100 ms,
// BackoffMax 5 s: what a real dongle gets) on a pty in front of rcp.
func benchDriver(b *testing.B, rcp *sim.RCP) (*spinel.Driver, *sim.Port) {
	b.Helper()
	port, err := sim.NewPort(b.TempDir(), "rcp", rcp)
	if err != nil {
		b.Fatal(err)
	}
	d, err := spinel.New(spinel.Config{Device: port.Path(), Channel: 15, PANID: 0xFACE})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close(); port.Close(); rcp.Leave() })
	benchUp(b, d)
	return d, port
}

func benchUp(b *testing.B, d *spinel.Driver) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.WaitUp(ctx); err != nil {
		b.Fatalf("not up: %v (%+v)", err, d.Stats())
	}
}

func benchUntil(b *testing.B, what string, cond func() bool) {
	b.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
	}
}

// BenchmarkRecoveryAfterReplug: with the driver's default timing, the
// time from a pulled dongle's device path coming back (after it was away
// long enough for any backoff to reach its 5 s cap) to the first frame
// sent. Reported as ms/recovery.
//
//	go test -run XXX -bench RecoveryAfterReplug -benchtime 5x ./radio/spinel/
func BenchmarkRecoveryAfterReplug(b *testing.B) {
	rcp := sim.NewRCP(sim.RCPConfig{}, sim.NewAir(sim.AirConfig{}))
	d, port := benchDriver(b, rcp)
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		retries := d.Stats().Retries
		port.Unplug()
		benchUntil(b, "absence noticed", func() bool { return d.Stats().Retries >= retries+70 }) // 7 s at 100 ms
		start := time.Now()
		port.Plug()
		benchUp(b, d)
		if err := d.Send(context.Background(), dataFrame(1, false, "x")); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		total, worst = total+took, max(worst, took)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/recovery")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
}

// BenchmarkRecoveryAfterResetLoop: with the driver's default timing, an
// RCP resets each time it is set up until the backoff has reached its cap;
// then it stops. Reported: the time from its stopping to the first frame
// sent (ms/recovery), at most BackoffMax plus a bring-up.
//
//	go test -run XXX -bench RecoveryAfterResetLoop -benchtime 3x ./radio/spinel/
func BenchmarkRecoveryAfterResetLoop(b *testing.B) {
	rcp := sim.NewRCP(sim.RCPConfig{}, sim.NewAir(sim.AirConfig{}))
	d, _ := benchDriver(b, rcp)
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		resets := rcp.Stats().SelfResets
		rcp.SetFaults(sim.Faults{ResetOnRadioOn: true})
		rcp.Reset(spinel.StatusResetWatchdog)
		// 100 ms doubling to 5 s: the 8th retry waits the full 5 s.
		benchUntil(b, "the backoff at its cap", func() bool { return rcp.Stats().SelfResets >= resets+9 })
		start := time.Now()
		rcp.SetFaults(sim.Faults{})
		benchUp(b, d)
		if err := d.Send(context.Background(), dataFrame(1, false, "x")); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		total, worst = total+took, max(worst, took)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/recovery")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
}
