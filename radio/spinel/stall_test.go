package spinel_test

import (
	"errors"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.bug.st/serial"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// stallPorts wraps the ports a driver opens. Once stall is set, a Write
// blocks until its port is closed: the RCP stopped reading, or the USB
// adapter hung.
type stallPorts struct {
	stall   atomic.Bool
	blocked atomic.Int32  // Writes blocked now
	started chan struct{} // one value per Write that blocked

	mu    sync.Mutex
	ports []*stallPort // guarded by mu
}

type stallPort struct {
	serial.Port
	all    *stallPorts
	closed chan struct{}
	once   sync.Once
}

var errStallClosed = errors.New("stallPort: closed")

func newStallPorts() *stallPorts { return &stallPorts{started: make(chan struct{}, 64)} }

// stallDriver starts a driver on a pty in front of rcp, its ports wrapped
// by stallPorts; with stalled, every Write blocks from the first on.
func stallDriver(t *testing.T, rcp *sim.RCP, stalled bool) (*spinel.Driver, *stallPorts) {
	t.Helper()
	port, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { port.Close() })
	ports := newStallPorts()
	t.Cleanup(ports.closeAll)
	ports.stall.Store(stalled)
	d, err := spinel.NewWrapped(testConfig(port.Path()), ports.wrap)
	if err != nil {
		t.Fatal(err)
	}
	return d, ports
}

func (s *stallPorts) wrap(p serial.Port) serial.Port {
	sp := &stallPort{Port: p, all: s, closed: make(chan struct{})}
	s.mu.Lock()
	s.ports = append(s.ports, sp)
	s.mu.Unlock()
	return sp
}

// closeAll unblocks every Write, for a test that failed.
func (s *stallPorts) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		p.once.Do(func() { close(p.closed) })
	}
}

func (p *stallPort) Write(b []byte) (int, error) {
	if !p.all.stall.Load() {
		return p.Port.Write(b)
	}
	p.all.blocked.Add(1)
	defer p.all.blocked.Add(-1)
	select {
	case p.all.started <- struct{}{}:
	default:
	}
	<-p.closed
	return 0, errStallClosed
}

func (p *stallPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return p.Port.Close()
}

// driverGoroutines lists the goroutines still running driver code.
func driverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "radio/spinel.(*session)") || strings.Contains(g, "radio/spinel.(*Driver)") ||
			strings.Contains(g, "spinel_test.(*stallPort)") {
			left = append(left, g)
		}
	}
	return left
}

// closeWithin closes d and fails the test if that takes longer than a
// generous bound.
func closeWithin(t *testing.T, d *spinel.Driver) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		d.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked by a stalled serial write")
	}
}

func checkNoDriverGoroutines(t *testing.T, ports *stallPorts) {
	t.Helper()
	testutil.EventuallyWithin(t, 30*time.Second, "driver goroutines to end", func() bool { return len(driverGoroutines()) == 0 })
	if n := ports.blocked.Load(); n != 0 {
		t.Errorf("%d serial writes still blocked", n)
	}
}

// A Write that never returns, from the first command (the bring-up's
// CMD_RESET) on, must not keep Close from returning, nor leave goroutines.
func TestCloseReturnsWithWriteStalledAtBringUp(t *testing.T) {
	d, ports := stallDriver(t, sim.NewRCP(sim.RCPConfig{}, nil), true)
	select {
	case <-ports.started:
	case <-time.After(10 * time.Second):
		d.Close()
		t.Fatal("the driver wrote nothing")
	}
	closeWithin(t, d)
	checkNoDriverGoroutines(t, ports)
}

// A port that stops taking writes while the link is up: Send returns when
// its timeout passes instead of waiting on the write, the link is reset,
// and Close returns and leaves no goroutine.
func TestSendAndCloseReturnWithWriteStalledWhileUp(t *testing.T) {
	rcp := sim.NewRCP(sim.RCPConfig{}, sim.NewAir(sim.AirConfig{}))
	defer rcp.Leave()
	d, ports := stallDriver(t, rcp, false)
	waitUp(t, d)
	if err := d.Send(ctxT(t), dataFrame(1, false, "before")); err != nil {
		t.Fatal(err)
	}

	ports.stall.Store(true)
	errs := make(chan error, 2)
	for i := range 2 { // the second waits for the first's transmit slot
		go func() { errs <- d.Send(ctxT(t), dataFrame(byte(2+i), false, "stalled")) }()
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, spinel.ErrTimeout) && !errors.Is(err, radio.ErrDown) {
				t.Errorf("Send on a stalled port = %v, want ErrTimeout or ErrDown", err)
			}
		case <-time.After(10 * time.Second):
			ports.closeAll()
			t.Fatal("Send blocked by a stalled serial write")
		}
	}
	testutil.EventuallyWithin(t, 30*time.Second, "the link reset", func() bool {
		st := d.Stats()
		return st.State == spinel.StateDown && strings.Contains(st.LastError, "no reply in time")
	})
	closeWithin(t, d)
	checkNoDriverGoroutines(t, ports)
}
