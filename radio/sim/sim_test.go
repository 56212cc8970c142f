package sim_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// host is a minimal Spinel host over a pipe, enough to drive the RCP
// without the real driver (which has its own tests against the sim).
type host struct {
	t      *testing.T
	w      io.WriteCloser
	frames chan spinel.Frame
	done   chan struct{}
}

func newHost(t *testing.T, rcp *sim.RCP) *host {
	hostR, rcpW := io.Pipe()
	rcpR, hostW := io.Pipe()
	h := &host{t: t, w: hostW, frames: make(chan spinel.Frame, 64), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		rcp.Serve(struct {
			io.Reader
			io.Writer
		}{rcpR, rcpW})
		rcpW.Close()
	}()
	go func() {
		defer wg.Done()
		dec := spinel.NewDecoder(0)
		buf := make([]byte, 256)
		for {
			n, err := hostR.Read(buf)
			dec.Feed(buf[:n], func(b []byte) {
				f, err := spinel.ParseFrame(bytes.Clone(b))
				if err == nil {
					h.frames <- f
				}
			})
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		hostW.Close()
		rcpR.Close()
		hostR.Close()
		wg.Wait()
	})
	return h
}

func (h *host) send(f spinel.Frame) {
	b, err := f.Append(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.w.Write(spinel.AppendHDLC(nil, b)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) next() spinel.Frame {
	h.t.Helper()
	select {
	case f := <-h.frames:
		return f
	case <-time.After(10 * time.Second):
		h.t.Fatal("no frame from the rcp")
		return spinel.Frame{}
	}
}

func TestRCPAnswersLikeOpenThread(t *testing.T) {
	rcp := sim.NewRCP(sim.RCPConfig{}, nil)
	h := newHost(t, rcp)
	if f := h.next(); f.Prop != spinel.PropLastStatus || f.Header.TID() != 0 || !bytes.Equal(f.Value, []byte{112}) {
		t.Fatalf("power-on notification %+v", f)
	}
	h.send(spinel.Frame{Header: spinel.MakeHeader(0, 0), Cmd: spinel.CmdReset})
	if f := h.next(); !bytes.Equal(f.Value, []byte{114}) {
		t.Fatalf("reset notification %+v", f)
	}
	for _, tc := range []struct {
		prop uint32
		want []byte
	}{
		{spinel.PropProtocolVersion, []byte{4, 3}},
		{spinel.PropCaps, []byte{24, 34, 0x81, 0x04}},
		{spinel.PropHWAddr, []byte{0x18, 0xB4, 0x30, 0, 0, 0, 0, 1}},
		{spinel.PropRCPAPIVersion, []byte{11}},
	} {
		h.send(spinel.Frame{Header: spinel.MakeHeader(0, 5), Cmd: spinel.CmdPropValueGet, Prop: tc.prop})
		f := h.next()
		if f.Header.TID() != 5 || f.Prop != tc.prop || !bytes.Equal(f.Value, tc.want) {
			t.Errorf("get %d: %+v", tc.prop, f)
		}
	}
	// Transmit before the PHY is enabled is refused.
	tx, _ := spinel.TxRequest{PSDU: []byte{1, 0, 0}, Channel: 11}.Append(nil)
	h.send(spinel.Frame{Header: spinel.MakeHeader(0, 7), Cmd: spinel.CmdPropValueSet, Prop: spinel.PropStreamRaw, Value: tx})
	if f := h.next(); f.Header.TID() != 7 || f.Prop != spinel.PropLastStatus || f.Value[0] != byte(spinel.StatusInvalidState) {
		t.Errorf("tx with phy off: %+v", f)
	}
	h.send(spinel.Frame{Header: spinel.MakeHeader(0, 8), Cmd: spinel.CmdPropValueSet, Prop: spinel.PropPHYEnabled, Value: []byte{1}})
	if f := h.next(); f.Prop != spinel.PropPHYEnabled || f.Header.TID() != 8 {
		t.Errorf("set phy enabled: %+v", f)
	}
	h.send(spinel.Frame{Header: spinel.MakeHeader(0, 9), Cmd: spinel.CmdPropValueSet, Prop: spinel.PropStreamRaw, Value: tx})
	if f := h.next(); f.Header.TID() != 9 || f.Prop != spinel.PropLastStatus || f.Value[0] != byte(spinel.StatusOK) {
		t.Errorf("tx-done: %+v", f)
	}
}

func TestAirLossAckAndBusy(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{Seed: 1})
	var got [][]byte
	var mu sync.Mutex
	b := air.Join(func(f radio.Frame) bool {
		mu.Lock()
		got = append(got, f.Data)
		mu.Unlock()
		return true
	})
	a := air.Join(func(radio.Frame) bool { return false })
	defer a.Leave()
	if err := a.Transmit([]byte{0x61, 0x88, 1}); err != nil { // ack requested, b acks
		t.Fatal(err)
	}
	air.SetLoss(1)
	if err := a.Transmit([]byte{0x61, 0x88, 2}); !errors.Is(err, radio.ErrNoAck) {
		t.Fatalf("lost frame: %v", err)
	}
	if err := a.Transmit([]byte{0x41, 0x88, 3}); err != nil { // no ack requested
		t.Fatal(err)
	}
	air.SetLoss(0)
	air.SetBusy(true)
	if err := a.Transmit([]byte{0x41, 0x88, 4}); !errors.Is(err, radio.ErrChannelBusy) {
		t.Fatalf("busy: %v", err)
	}
	air.SetBusy(false)
	b.Leave()
	if err := a.Transmit([]byte{0x61, 0x88, 5}); !errors.Is(err, radio.ErrNoAck) {
		t.Fatalf("after leave: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0][2] != 1 {
		t.Errorf("b heard %x", got)
	}
}

func TestPortUnplugRemovesPathAndPlugRestoresIt(t *testing.T) {
	rcp := sim.NewRCP(sim.RCPConfig{}, nil)
	p, err := sim.NewPort(t.TempDir(), "rcp", rcp)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	first, err := os.Readlink(p.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Unplug(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("path after unplug: %v", err)
	}
	if err := p.Plug(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Readlink(p.Path()); err != nil {
		t.Fatalf("path after plug: %v (was %s)", err, first)
	}
	// The published path is a working tty that speaks Spinel: the first
	// thing on it is the power-on notification.
	f, err := os.OpenFile(p.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := spinel.NewDecoder(0)
	var frames [][]byte
	buf := make([]byte, 64)
	for len(frames) == 0 {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		dec.Feed(buf[:n], func(b []byte) { frames = append(frames, bytes.Clone(b)) })
	}
	if !bytes.Equal(frames[0], []byte{0x80, 0x06, 0x00, 0x70}) {
		t.Errorf("first frame % X", frames[0])
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Plug(); !errors.Is(err, sim.ErrPortClosed) {
		t.Errorf("Plug after Close = %v", err)
	}
}
