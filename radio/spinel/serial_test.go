package spinel_test

import (
	"context"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// termios reads the settings the driver left on the rig's pty.
func termios(t *testing.T, p *sim.Port) *unix.Termios {
	t.Helper()
	tio, err := p.Termios()
	if err != nil {
		t.Fatal(err)
	}
	return tio
}

func TestSerialPortSettingsFollowConfig(t *testing.T) {
	for _, tt := range []struct {
		name   string
		edit   func(*spinel.Config)
		speed  uint32 // termios CBAUD bits
		rtscts bool
	}{
		{"defaults: 460800 with rts/cts", nil, unix.B460800, true},
		{"rts/cts off", func(c *spinel.Config) { c.DisableRTSCTS = true }, unix.B460800, false},
		{"115200", func(c *spinel.Config) { c.Baud = 115200 }, unix.B115200, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, sim.RCPConfig{}, tt.edit)
			tio := termios(t, r.port)
			if got := tio.Cflag & unix.CBAUD; got != tt.speed {
				t.Errorf("CBAUD %#o, want %#o", got, tt.speed)
			}
			if got := tio.Cflag&unix.CRTSCTS != 0; got != tt.rtscts {
				t.Errorf("CRTSCTS %v, want %v", got, tt.rtscts)
			}
			// Either way the link works.
			if err := r.d.Send(ctxT(t), dataFrame(1, true, "x")); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := (spinel.Config{}).WithDefaults().Baud; got != 460800 || spinel.DefaultBaud != 460800 {
		t.Errorf("default baud %d", got)
	}
}

// warnCounter counts Warn records with a given message.
type warnCounter struct {
	msg string
	n   atomic.Int32
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnCounter) WithGroup(string) slog.Handler            { return w }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && r.Message == w.msg {
		w.n.Add(1)
	}
	return nil
}

// A device that does not take RTS/CTS runs without it: the link comes up
// and comes back after every replug, and the driver says so once, not per
// reconnect.
func TestDeviceRefusingRTSCTSWarnsOnceAndWorks(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	rcp := sim.NewRCP(sim.RCPConfig{}, air)
	defer rcp.Leave()
	port, err := sim.NewPort(t.TempDir(), "ttyUSB-bridge-without-rts-cts", rcp)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	warns := &warnCounter{msg: "serial port runs without rts/cts flow control"}
	cfg := testConfig(port.Path())
	cfg.Logger = slog.New(warns)
	var mu sync.Mutex
	asked := 0
	d, err := spinel.NewWithFlowControl(cfg, func(serial.Port) error {
		mu.Lock()
		asked++
		mu.Unlock()
		return spinel.ErrNoFlowControl
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitUp(t, d)
	for i := range 2 {
		if err := port.Unplug(); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWithin(t, 30*time.Second, "unplug noticed", func() bool { return d.State() == spinel.StateDown })
		if err := port.Plug(); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWithin(t, 30*time.Second, "reconnect", func() bool { return d.Stats().Reconnects == uint64(i+1) && d.State() == spinel.StateUp })
	}
	if err := d.Send(ctxT(t), dataFrame(1, false, "x")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := asked
	mu.Unlock()
	if n < 3 || warns.n.Load() != 1 {
		t.Fatalf("flow control asked for %d times, %d warnings; want every open (3+) and one warning", n, warns.n.Load())
	}
	if tio := termios(t, port); tio.Cflag&unix.CRTSCTS != 0 {
		t.Fatal("CRTSCTS set although the setter refused")
	}
}

func TestRadioConfigRTSCTSMapsToDriver(t *testing.T) {
	off, on := false, true
	for _, tt := range []struct {
		rtscts  *bool
		disable bool
	}{{nil, false}, {&on, false}, {&off, true}} {
		c := spinel.FromRadioConfig(radio.Config{Device: "/dev/x", RTSCTS: tt.rtscts}, nil)
		if c.DisableRTSCTS != tt.disable {
			t.Errorf("rtscts %v: DisableRTSCTS %v", tt.rtscts, c.DisableRTSCTS)
		}
	}
}
