package spinel_test

import (
	"bytes"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio/spinel"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A radio whose device is missing (the dongle not plugged in) is a
// warning: the radio does not serve. The retries that fail the same way
// after it are debug, so the journal is not flooded every few seconds.
func TestMissingDeviceIsAWarningOnce(t *testing.T) {
	var buf lockedBuffer
	cfg := testConfig(filepath.Join(t.TempDir(), "ttyACM9"))
	cfg.BackoffMin, cfg.BackoffMax = cfg.BackoffMin/10, cfg.BackoffMin/5
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := spinel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testutil.EventuallyWithin(t, 30*time.Second, "three failed opens", func() bool { return d.Stats().Retries >= 3 })
	var warn, debug int
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(line, `msg="rcp not available"`) {
			continue
		}
		switch {
		case strings.Contains(line, "level=WARN") && strings.Contains(line, "no such file"):
			warn++
		case strings.Contains(line, "level=DEBUG"):
			debug++
		default:
			t.Errorf("unexpected line: %s", line)
		}
	}
	if warn != 1 || debug < 2 {
		t.Fatalf("%d warnings and %d debug lines for a missing device, want 1 and the rest:\n%s", warn, debug, buf.String())
	}
}
