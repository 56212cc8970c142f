package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// ErrStale is returned by Check when a heartbeat has not beaten within the
// watchdog interval.
var ErrStale = errors.New("service: heartbeat stale")

// defaultBeatInterval is what BeatInterval suggests when systemd set no
// watchdog: loops beat anyway, and this keeps their deadlines sane.
const defaultBeatInterval = 5 * time.Second

// Notifier reports the daemon's state to the service manager and keeps its
// watchdog fed while every registered loop is alive. The zero value is not
// usable; call NewNotifier. Without NOTIFY_SOCKET every method is a no-op
// that returns nil.
type Notifier struct {
	addr     *net.UnixAddr // nil: not under systemd's notify protocol
	interval time.Duration // WATCHDOG_USEC for this process; 0: no watchdog
	log      *slog.Logger
	now      func() time.Time

	mu    sync.Mutex
	beats map[*Heartbeat]struct{} // guarded by mu
	stale string                  // guarded by mu: the stale report logged, "" when none
}

// Options configure a Notifier. The zero value is fine.
type Options struct {
	// Logger receives watchdog decisions; nil discards them.
	Logger *slog.Logger
	// Now is the clock heartbeats are judged by; nil means time.Now.
	Now func() time.Time
}

// NewNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and
// removes them from the environment so that child processes (plugins) do
// not inherit them: only the main process speaks for the service.
func NewNotifier(opts Options) (*Notifier, error) {
	n := &Notifier{log: opts.Logger, now: opts.Now, beats: map[*Heartbeat]struct{}{}}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	if s := os.Getenv("NOTIFY_SOCKET"); s != "" {
		n.addr = &net.UnixAddr{Name: s, Net: "unixgram"}
	}
	interval, err := daemon.SdWatchdogEnabled(true)
	os.Unsetenv("NOTIFY_SOCKET")
	if err != nil {
		return nil, fmt.Errorf("service: watchdog: %w", err)
	}
	if n.addr != nil {
		n.interval = interval
	}
	return n, nil
}

// Enabled reports whether a service manager listens for notifications.
func (n *Notifier) Enabled() bool { return n.addr != nil }

// WatchdogInterval is the service's WatchdogSec, or 0 when the watchdog is
// off.
func (n *Notifier) WatchdogInterval() time.Duration { return n.interval }

// BeatInterval is how often a loop should Beat at the least, for example
// as its read deadline: a quarter of the watchdog interval, so one late
// beat never starves the watchdog; 5 s when there is no watchdog.
func (n *Notifier) BeatInterval() time.Duration {
	if n.interval == 0 {
		return defaultBeatInterval
	}
	return n.interval / 4
}

// Ready tells the manager that startup (or a reload) is complete: call it
// once every listener is bound and every loop is running.
func (n *Notifier) Ready() error { return n.send("READY=1") }

// Status sets the one-line status that `systemctl status` shows.
func (n *Notifier) Status(s string) error {
	return n.send("STATUS=" + strings.ReplaceAll(s, "\n", " "))
}

// Reloading tells the manager a reload began; follow it with Ready when
// the new configuration is in force (or the old one kept). MONOTONIC_USEC
// lets systemd 253 and later match the two; 252 ignores it.
func (n *Notifier) Reloading() error {
	return n.send("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
}

// Stopping tells the manager that a clean stop began.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// Watchdog sends one keep-alive ping, unconditionally. Run is what sends
// them in normal operation; this is for a long, known-good step (such as
// draining at stop) that would otherwise outlast the watchdog.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

func (n *Notifier) send(state string) error {
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("service: notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.TrimSuffix(state, "\n"))); err != nil {
		return fmt.Errorf("service: notify: %w", err)
	}
	return nil
}

// Heartbeat is one loop's proof of life. A loop calls Beat each time round
// (at least every BeatInterval) and Stop when it ends on purpose.
type Heartbeat struct {
	n    *Notifier
	name string

	mu   sync.Mutex
	last time.Time // guarded by mu
}

// Heartbeat registers a loop by name; it counts as having just beaten.
func (n *Notifier) Heartbeat(name string) *Heartbeat {
	h := &Heartbeat{n: n, name: name, last: n.now()}
	n.mu.Lock()
	n.beats[h] = struct{}{}
	n.mu.Unlock()
	return h
}

// Beat records that the loop is alive.
func (h *Heartbeat) Beat() {
	now := h.n.now()
	h.mu.Lock()
	h.last = now
	h.mu.Unlock()
}

// Stop unregisters the loop: a loop that ended on purpose must not starve
// the watchdog. Stop is idempotent.
func (h *Heartbeat) Stop() {
	h.n.mu.Lock()
	delete(h.n.beats, h)
	h.n.mu.Unlock()
}

// Check returns nil when every registered loop has beaten within the
// watchdog interval (4×BeatInterval without a watchdog), or an error
// wrapping ErrStale that names the stale loops.
func (n *Notifier) Check() error {
	limit := n.interval
	if limit == 0 {
		limit = 4 * defaultBeatInterval
	}
	now := n.now()
	n.mu.Lock()
	var stale []string
	for h := range n.beats {
		h.mu.Lock()
		age := now.Sub(h.last)
		h.mu.Unlock()
		if age > limit {
			stale = append(stale, fmt.Sprintf("%s (%v)", h.name, age.Round(time.Millisecond)))
		}
	}
	n.mu.Unlock()
	if len(stale) == 0 {
		return nil
	}
	sort.Strings(stale)
	return fmt.Errorf("%w: %s", ErrStale, strings.Join(stale, ", "))
}

// Run feeds the watchdog every half interval while Check passes, until ctx
// is done; then it returns nil. When a loop goes stale it stops pinging,
// logs once and sets STATUS, so systemd kills and restarts a daemon that
// is wedged rather than merely running. Without a watchdog Run returns nil
// at once.
func (n *Notifier) Run(ctx context.Context) error {
	if n.interval == 0 {
		return nil
	}
	t := time.NewTicker(n.interval / 2)
	defer t.Stop()
	n.tick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n.tick()
		}
	}
}

// tick is one watchdog decision.
func (n *Notifier) tick() {
	err := n.Check()
	n.mu.Lock()
	was := n.stale
	if err != nil {
		n.stale = err.Error()
	} else {
		n.stale = ""
	}
	n.mu.Unlock()
	if err != nil {
		if was == "" {
			n.log.Error("watchdog: withholding keep-alive", "err", err)
			n.Status("watchdog: " + err.Error())
		}
		return
	}
	if was != "" {
		n.log.Info("watchdog: all loops alive again")
	}
	if err := n.Watchdog(); err != nil {
		n.log.Warn("watchdog ping", "err", err)
	}
}
