package spinel_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// rig is the driver on a real pty, through go.bug.st/serial, talking to
// the fake RCP, with one simulated node on the air.
type rig struct {
	air  *sim.Air
	rcp  *sim.RCP
	port *sim.Port
	d    *spinel.Driver
	node *node
}

// node is a station on the air that records what it hears.
type node struct {
	st    sim.Station
	noAck atomic.Bool
	mu    sync.Mutex
	heard [][]byte // guarded by mu
}

func (n *node) rx(f radio.Frame) bool {
	n.mu.Lock()
	n.heard = append(n.heard, f.Data)
	n.mu.Unlock()
	return !n.noAck.Load()
}

func (n *node) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.heard)
}

func testConfig(dev string) spinel.Config {
	return spinel.Config{
		Device: dev, Channel: 15, PANID: 0xFACE, ShortAddr: 0x0000,
		// Short enough for the recovery paths, long enough for -race on a
		// loaded two-core machine.
		CommandTimeout: time.Second, TxTimeout: 2 * time.Second, ResetTimeout: time.Second,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
}

func newRig(t *testing.T, rcpCfg sim.RCPConfig, edit func(*spinel.Config)) *rig {
	t.Helper()
	r := &rig{air: sim.NewAir(sim.AirConfig{})}
	r.rcp = sim.NewRCP(rcpCfg, r.air)
	r.node = &node{}
	r.node.st = r.air.Join(r.node.rx)
	var err error
	r.port, err = sim.NewPort(t.TempDir(), "usb-Nordic_Semiconductor_nRF528xx_OpenThread_Device-if00", r.rcp)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(r.port.Path())
	if edit != nil {
		edit(&cfg)
	}
	r.d, err = spinel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.d.Close()
		r.port.Close()
		r.rcp.Leave()
		r.node.st.Leave()
	})
	waitUp(t, r.d)
	return r
}

func waitUp(t *testing.T, d *spinel.Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitUp(ctx); err != nil {
		t.Fatalf("link not up: %v (stats %+v)", err, d.Stats())
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dataFrame is a MAC data frame, PAN ID compressed, short addresses, with
// the ack-request bit as given.
func dataFrame(seq byte, ackReq bool, payload string) []byte {
	fc0 := byte(0x41)
	if ackReq {
		fc0 |= 0x20
	}
	return append([]byte{fc0, 0x88, seq, 0xCE, 0xFA, 0x01, 0x00, 0x00, 0x00}, payload...)
}

func TestBringUpConfiguresRadio(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	info := r.d.Info()
	if info.ProtocolMajor != 4 || info.ProtocolMinor != 3 {
		t.Errorf("protocol %d.%d", info.ProtocolMajor, info.ProtocolMinor)
	}
	if !strings.HasPrefix(info.NCPVersion, "OPENTHREAD/") || info.RCPAPIVersion == 0 {
		t.Errorf("info %+v", info)
	}
	want := [8]byte{0x18, 0xB4, 0x30, 0, 0, 0, 0, 1}
	if info.HWAddr != want || info.ExtAddr != want {
		t.Errorf("hwaddr %x extaddr %x", info.HWAddr, info.ExtAddr)
	}
	ch, pan, short, ext, raw := r.rcp.Radio()
	if ch != 15 || pan != 0xFACE || short != 0 || ext != want || !raw {
		t.Errorf("rcp radio: ch %d pan %#x short %#x ext %x raw %v", ch, pan, short, ext, raw)
	}
	if r.d.State() != spinel.StateUp {
		t.Errorf("state %v", r.d.State())
	}
}

func TestBringUpUsesExtAddrOverride(t *testing.T) {
	ext := [8]byte{0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77}
	r := newRig(t, sim.RCPConfig{}, func(c *spinel.Config) { c.ExtAddr = ext })
	if _, _, _, got, _ := r.rcp.Radio(); got != ext {
		t.Errorf("rcp ext addr %x, want %x", got, ext)
	}
}

func TestBringUpRefusesWrongRCP(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sim.RCPConfig
		want string
	}{
		{"protocol major 5", sim.RCPConfig{ProtocolMajor: 5}, "protocol 5.0"},
		{"no MAC_RAW", sim.RCPConfig{Caps: []uint32{spinel.CapConfigRadio}}, "capability 513"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcp := sim.NewRCP(tc.cfg, nil)
			port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
			if err != nil {
				t.Fatal(err)
			}
			defer port.Close()
			d, err := spinel.New(testConfig(port.Path()))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			testutil.EventuallyWithin(t, 30*time.Second, "a failed bring-up", func() bool { return d.Stats().Retries > 0 })
			st := d.Stats()
			if st.State != spinel.StateDown || !strings.Contains(st.LastError, tc.want) {
				t.Errorf("stats %+v, want down with %q", st, tc.want)
			}
		})
	}
}

func TestSendReportsTxDone(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	for _, tc := range []struct {
		name   string
		ackReq bool
		noAck  bool
		forced error
		want   error
	}{
		{"acked", true, false, nil, nil},
		{"broadcast needs no ack", false, true, nil, nil},
		{"no ack", true, true, nil, radio.ErrNoAck},
		{"cca failure", true, false, radio.ErrChannelBusy, radio.ErrChannelBusy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.node.noAck.Store(tc.noAck)
			r.rcp.SetFaults(sim.Faults{TxResult: tc.forced})
			before := r.node.count()
			err := r.d.Send(ctxT(t), dataFrame(1, tc.ackReq, "hello"))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Send = %v, want %v", err, tc.want)
			}
			if tc.forced == nil && r.node.count() != before+1 {
				t.Errorf("node heard %d frames, want %d", r.node.count(), before+1)
			}
		})
	}
	r.rcp.SetFaults(sim.Faults{})
	r.node.mu.Lock()
	last := r.node.heard[len(r.node.heard)-1]
	r.node.mu.Unlock()
	if string(last) != string(dataFrame(1, true, "hello")) {
		t.Errorf("node heard %x", last)
	}
	st := r.d.Stats()
	if st.TxFrames != 2 || st.TxErrors != 2 {
		t.Errorf("stats %+v, want 2 tx, 2 errors", st)
	}
}

func TestSendRejectsLongFrame(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	if err := r.d.Send(ctxT(t), make([]byte, 126)); !errors.Is(err, radio.ErrTooLong) {
		t.Fatalf("Send(126 bytes) = %v", err)
	}
	if err := r.d.Send(ctxT(t), make([]byte, 125)); err != nil {
		t.Fatalf("Send(125 bytes) = %v", err)
	}
}

func TestRecvCarriesRSSIAndLQI(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	want := dataFrame(7, false, "from node")
	if err := r.node.st.Transmit(want); err != nil {
		t.Fatal(err)
	}
	f, err := r.d.Recv(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if string(f.Data) != string(want) || f.RSSI != -60 || f.LQI != 255 {
		t.Errorf("got %x rssi %d lqi %d", f.Data, f.RSSI, f.LQI)
	}
	if !r.rcp.Deliver(radio.Frame{Data: []byte{1, 2, 3}, RSSI: -91, LQI: 40}) {
		t.Fatal("rcp did not deliver")
	}
	f, err = r.d.Recv(ctxT(t))
	if err != nil || string(f.Data) != "\x01\x02\x03" || f.RSSI != -91 || f.LQI != 40 {
		t.Errorf("got %+v, %v", f, err)
	}
}

func TestConcurrentSendsShareTIDs(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, func(c *spinel.Config) { c.MaxTxInFlight = 14 })
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.d.Send(ctxT(t), dataFrame(byte(i), true, fmt.Sprint(i)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := r.node.count(); got != n {
		t.Errorf("node heard %d, want %d", got, n)
	}
}

func TestSendCancelledKeepsTIDUntilReply(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	r.air.SetDelay(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.d.Send(ctx, dataFrame(1, true, "x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v", err)
	}
	r.air.SetDelay(0)
	// The late tx-done must not be mistaken for the next Send's.
	for i := range 3 {
		if err := r.d.Send(ctxT(t), dataFrame(byte(i), true, "y")); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.d.Stats(); st.State != spinel.StateUp || st.Reconnects != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnplugAndReplug(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	if err := r.port.Unplug(); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "link down", func() bool { return r.d.State() == spinel.StateDown })
	if err := r.d.Send(ctxT(t), dataFrame(1, false, "x")); !errors.Is(err, radio.ErrDown) {
		t.Fatalf("Send while unplugged = %v, want ErrDown", err)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "failed reopen attempts", func() bool { return r.d.Stats().Retries >= 2 })
	if err := r.port.Plug(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, r.d)
	if err := r.d.Send(ctxT(t), dataFrame(2, true, "back")); err != nil {
		t.Fatalf("Send after replug = %v", err)
	}
	if st := r.d.Stats(); st.Reconnects != 1 {
		t.Errorf("stats %+v, want 1 reconnect", st)
	}
	if _, _, _, _, raw := r.rcp.Radio(); !raw {
		t.Error("settings not replayed")
	}
}

func TestUnexpectedResetReconnects(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	r.rcp.Reset(spinel.StatusResetWatchdog)
	testutil.EventuallyWithin(t, 30*time.Second, "reconnect", func() bool {
		st := r.d.Stats()
		return st.Reconnects == 1 && st.State == spinel.StateUp
	})
	if st := r.d.Stats(); !strings.Contains(st.LastError, "unexpected reset") {
		t.Errorf("last error %q", st.LastError)
	}
	if err := r.d.Send(ctxT(t), dataFrame(1, true, "x")); err != nil {
		t.Fatal(err)
	}
}

func TestMuteRCPTimesOutAndRecovers(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, func(c *spinel.Config) {
		c.TxTimeout = 300 * time.Millisecond
		c.CommandTimeout = 300 * time.Millisecond
		c.ResetTimeout = 300 * time.Millisecond
	})
	r.rcp.SetFaults(sim.Faults{Mute: true})
	err := r.d.Send(ctxT(t), dataFrame(1, true, "x"))
	if !errors.Is(err, spinel.ErrTimeout) {
		t.Fatalf("Send to a mute RCP = %v, want ErrTimeout", err)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "link down", func() bool { return r.d.State() == spinel.StateDown })
	testutil.EventuallyWithin(t, 30*time.Second, "failed bring-ups", func() bool { return r.d.Stats().Retries >= 1 })
	r.rcp.SetFaults(sim.Faults{})
	waitUp(t, r.d)
	if err := r.d.Send(ctxT(t), dataFrame(2, true, "y")); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptAndStrayFramesAreDropped(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	r.rcp.SetFaults(sim.Faults{CorruptNext: 3})
	for i := range 5 {
		r.rcp.Deliver(radio.Frame{Data: []byte{byte(i)}, RSSI: -50, LQI: 100})
	}
	r.rcp.InjectBytes([]byte{0x00, 0x7D, 0x7E, 0xFF, 0x13, 0x7E, 0x7E, 0x55})
	r.rcp.InjectFrame([]byte{0x89, 0x06, 0x00, 0x00})       // a reply with a TID nobody waits for
	r.rcp.InjectFrame([]byte{0x80, 0x06, 0x70})             // IS of an unknown property
	r.rcp.InjectFrame([]byte{0x80, 0x07, 0x05, 0x01})       // INSERTED: tolerated
	r.rcp.InjectFrame([]byte{0x40, 0x06, 0x00, 0x00})       // not Spinel: FLG 01
	r.rcp.InjectFrame([]byte{0x80, 0x06, 0x71, 0x05, 0x00}) // STREAM_RAW, truncated
	r.rcp.Deliver(radio.Frame{Data: []byte{9}, RSSI: -50, LQI: 100})
	for _, want := range []byte{3, 4, 9} {
		f, err := r.d.Recv(ctxT(t))
		if err != nil || len(f.Data) != 1 || f.Data[0] != want {
			t.Fatalf("Recv = %x, %v; want %x", f.Data, err, want)
		}
	}
	// The reader counts a read's drops once it has dispatched all of
	// that read's frames, so the counts may trail the frames by a moment.
	var st spinel.Stats
	testutil.Eventually(t, "the drops counted", func() bool {
		st = r.d.Stats()
		return st.BadFCS >= 3 && st.DecodeErrors >= 2
	})
	if st.State != spinel.StateUp {
		t.Errorf("stats %+v", st)
	}
	if err := r.d.Send(ctxT(t), dataFrame(1, true, "still fine")); err != nil {
		t.Fatal(err)
	}
}

func TestBytesSplitOnePerWrite(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	rcp := sim.NewRCP(sim.RCPConfig{}, air)
	rcp.SetFaults(sim.Faults{SplitWrites: true})
	port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	d, err := spinel.New(testConfig(port.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitUp(t, d)
	if err := d.Send(ctxT(t), dataFrame(1, false, "x")); err != nil {
		t.Fatal(err)
	}
	rcp.Deliver(radio.Frame{Data: []byte("\x7e\x7d\x11\x13\xf8"), RSSI: -40, LQI: 9})
	f, err := d.Recv(ctxT(t))
	if err != nil || string(f.Data) != "\x7e\x7d\x11\x13\xf8" {
		t.Fatalf("Recv = %x, %v", f.Data, err)
	}
}

func TestSendAndRecvAfterClose(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	if err := r.d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := r.d.Send(ctxT(t), []byte{1}); !errors.Is(err, radio.ErrClosed) {
		t.Errorf("Send = %v", err)
	}
	if _, err := r.d.Recv(ctxT(t)); !errors.Is(err, radio.ErrClosed) {
		t.Errorf("Recv = %v", err)
	}
}

func TestSendWhileDownFailsFast(t *testing.T) {
	d, err := spinel.New(testConfig(t.TempDir() + "/missing"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Send(ctxT(t), []byte{1}); !errors.Is(err, radio.ErrDown) {
		t.Fatalf("Send = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  spinel.Config
		ok   bool
	}{
		{"defaults", spinel.Config{Device: "/dev/ttyACM0"}, true},
		{"no device", spinel.Config{}, false},
		{"channel 27", spinel.Config{Device: "x", Channel: 27}, false},
		{"backoff inverted", spinel.Config{Device: "x", BackoffMin: time.Second, BackoffMax: time.Millisecond}, false},
		{"tx in flight 15", spinel.Config{Device: "x", MaxTxInFlight: 15}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, spinel.ErrConfig)) {
				t.Errorf("Validate = %v", err)
			}
		})
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open files: %v", err)
	}
	return len(ents)
}

func TestNoGoroutineOrFDLeak(t *testing.T) {
	// Warm up what stays for the process (poller, timers) before counting.
	func() {
		r := newRig(t, sim.RCPConfig{}, nil)
		r.d.Close()
		r.port.Close()
	}()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)

	air := sim.NewAir(sim.AirConfig{})
	rcp := sim.NewRCP(sim.RCPConfig{}, air)
	port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	d, err := spinel.New(testConfig(port.Path()))
	if err != nil {
		t.Fatal(err)
	}
	waitUp(t, d)
	if err := d.Send(ctxT(t), dataFrame(1, false, "x")); err != nil {
		t.Fatal(err)
	}
	// One event at a time, each seen by the driver before the next, so
	// that two recoveries are two reconnects.
	port.Unplug()
	testutil.EventuallyWithin(t, 30*time.Second, "unplug noticed", func() bool { return d.State() != spinel.StateUp })
	port.Plug()
	testutil.EventuallyWithin(t, 30*time.Second, "first reconnect", func() bool { return d.Stats().Reconnects == 1 && d.State() == spinel.StateUp })
	rcp.Reset(spinel.StatusResetCrash)
	testutil.EventuallyWithin(t, 30*time.Second, "second reconnect", func() bool { return d.Stats().Reconnects == 2 && d.State() == spinel.StateUp })
	d.Close()
	port.Close()
	rcp.Leave()

	testutil.EventuallyWithin(t, 30*time.Second, "goroutines and fds back to baseline", func() bool {
		return runtime.NumGoroutine() <= g0 && openFDs(t) <= fd0
	})
}

// fillFDs opens /dev/null until the lowest free descriptor is >= 1024, so
// anything opened next would crash go.bug.st/serial's select.
func fillFDs(t *testing.T) (release func()) {
	var files []*os.File
	release = func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			release()
			t.Fatalf("cannot open enough files to reach fd 1100 (raise ulimit -n): %v", err)
		}
		files = append(files, f)
		if f.Fd() >= 1100 {
			return release
		}
	}
}

func TestHighFDIsRefusedNotPanicked(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	rcp := sim.NewRCP(sim.RCPConfig{}, air)
	port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	release := fillFDs(t)
	defer release()
	d, err := spinel.New(testConfig(port.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testutil.EventuallyWithin(t, 30*time.Second, "a refused open", func() bool {
		return strings.Contains(d.Stats().LastError, spinel.ErrFDLimit.Error())
	})
	if d.State() != spinel.StateDown {
		t.Fatal("up on a high descriptor")
	}
	release()
	waitUp(t, d)
}

func TestReservedFDsSurviveReconnect(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	r.port.Unplug()
	// A failed reopen means the session is gone and the reservation refilled.
	testutil.EventuallyWithin(t, 30*time.Second, "a failed reopen", func() bool { return r.d.Stats().Retries >= 1 })
	// The port's descriptors are free now; whatever the process opens
	// next takes every low one but the driver's reservation.
	release := fillFDs(t)
	defer release()
	r.port.Plug()
	waitUp(t, r.d)
	if err := r.d.Send(ctxT(t), dataFrame(1, true, "x")); err != nil {
		t.Fatal(err)
	}
}

func TestSlowAndLostRepliesFromRCP(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, func(c *spinel.Config) { c.TxTimeout = 400 * time.Millisecond })
	r.rcp.SetFaults(sim.Faults{Delay: 20 * time.Millisecond})
	if err := r.d.Send(ctxT(t), dataFrame(1, true, "slow")); err != nil {
		t.Fatalf("Send with a slow RCP = %v", err)
	}
	r.rcp.SetFaults(sim.Faults{DropNext: 1}) // the tx-done is lost
	if err := r.d.Send(ctxT(t), dataFrame(2, true, "lost")); !errors.Is(err, spinel.ErrTimeout) {
		t.Fatalf("Send with a lost tx-done = %v, want ErrTimeout", err)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "reconnect", func() bool { return r.d.Stats().Reconnects == 1 && r.d.State() == spinel.StateUp })
	if err := r.d.Send(ctxT(t), dataFrame(3, true, "again")); err != nil {
		t.Fatal(err)
	}
}

// A Send given up on whose tx-done never comes holds its TID no longer than
// TxTimeout after: then the link is reset, saying why, and works again.
func TestOrphanedTIDWithoutReplyResetsLink(t *testing.T) {
	r := newRig(t, sim.RCPConfig{}, nil)
	r.rcp.SetFaults(sim.Faults{DropNext: 1}) // the tx-done is lost
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.d.Send(ctx, dataFrame(1, true, "x")) }()
	testutil.EventuallyWithin(t, 30*time.Second, "the rcp to take the frame", func() bool { return r.rcp.Stats().Transmits == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "the link reset and back", func() bool {
		st := r.d.Stats()
		return st.Reconnects == 1 && st.State == spinel.StateUp
	})
	if st := r.d.Stats(); !strings.Contains(st.LastError, "after its caller gave up") {
		t.Errorf("last error %q", st.LastError)
	}
	if err := r.d.Send(ctxT(t), dataFrame(2, true, "y")); err != nil {
		t.Fatal(err)
	}
}
