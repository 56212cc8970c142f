package slipradio_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/plugins/slipradio"
	"github.com/opaque-edge/gatewayd/radio"
)

// fakeRadio is a slip-radio on the master side of a pty.
type fakeRadio struct {
	t      *testing.T
	master *os.File
	slave  *os.File
	mac    [8]byte
	done   chan struct{}

	mu     sync.Mutex
	sent   [][]byte // MPDUs from "!S"; guarded by mu
	params [][]byte // "!V" commands; guarded by mu
	status byte     // the "!R" status to answer; guarded by mu
}

func newFakeRadio(t *testing.T) *fakeRadio {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	// A non-blocking duplicate of the master, so that Close ends a Read.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	raw(t, s)
	f := &fakeRadio{t: t, master: os.NewFile(uintptr(fd), "ptmx"), slave: s, mac: [8]byte{0x00, 0x12, 0x4b, 0, 0, 0, 0xc0, 0xdb}, done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		f.master.Close()
		<-f.done
		f.slave.Close()
	})
	return f
}

func raw(t *testing.T, f *os.File) {
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag = tio.Cflag&^(unix.CSIZE|unix.PARENB) | unix.CS8
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeRadio) serve() {
	defer close(f.done)
	var d slipradio.Decoder
	buf := make([]byte, 256)
	for {
		n, err := f.master.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// EIO while no one has the slave open: wait.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		d.Feed(buf[:n], f.handle, nil)
	}
}

func (f *fakeRadio) handle(m []byte) {
	switch {
	case bytes.Equal(m, []byte("?M")):
		f.write(append([]byte("!M"), f.mac[:]...))
	case len(m) >= 4 && m[0] == '!' && m[1] == 'S':
		f.mu.Lock()
		f.sent = append(f.sent, bytes.Clone(m[4:])) // after seq and an empty attribute list
		st := f.status
		f.mu.Unlock()
		f.write([]byte{'!', 'R', m[2], st, 1})
	case len(m) == 6 && m[0] == '!' && m[1] == 'V':
		f.mu.Lock()
		f.params = append(f.params, bytes.Clone(m))
		f.mu.Unlock()
	}
}

func (f *fakeRadio) write(m []byte) {
	if _, err := f.master.Write(slipradio.AppendFrame(nil, m)); err != nil {
		f.t.Log("fake radio write:", err)
	}
}

func buildPlugin(t *testing.T) (path, sum string) {
	path = filepath.Join(t.TempDir(), "gatewayd-slipradio")
	out, err := exec.Command("go", "build", "-o", path, "./cmd/gatewayd-slipradio").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return path, hex.EncodeToString(s[:])
}

func TestPluginMovesFramesBothWaysThroughTheHost(t *testing.T) {
	fake := newFakeRadio(t)
	path, sum := buildPlugin(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	h, err := plugins.New(ctx, []plugins.Config{{
		Name: "slip", Path: path, SHA256: sum,
		Config: map[string]any{"device": fake.slave.Name(), "tx_timeout": "2s"},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !slices.Contains(radio.Drivers(), "plugin:slip") {
		t.Errorf("drivers %v lack plugin:slip", radio.Drivers())
	}
	link, err := h.Radio("slip", 15, 0xABCD)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	if err := link.(radio.UpWaiter).WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	if got := link.(radio.ExtAddrReporter).ExtAddr(); got != fake.mac {
		t.Errorf("ext addr %x, want %x", got, fake.mac)
	}

	// Out: bytes that SLIP must escape arrive as they were.
	out := []byte{0x41, 0xd8, 0x01, 0xcd, 0xab, 0xff, 0xff, 0xc0, 0xdb, 0xdc, 0xdd, 0x00}
	if err := link.Send(ctx, out); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	sent := slices.Clone(fake.sent)
	fake.status = 2 // no ack from now on
	fake.mu.Unlock()
	if len(sent) != 1 || !bytes.Equal(sent[0], out) {
		t.Fatalf("device got %x, want %x", sent, out)
	}
	if err := link.Send(ctx, out); !errors.Is(err, radio.ErrNoAck) {
		t.Errorf("send with status 2: err = %v, want radio.ErrNoAck", err)
	}

	// In: a frame from the air reaches Recv byte-exact.
	in := []byte{0x41, 0xd8, 0x02, 0xcd, 0xab, 0xff, 0xff, 0xc0, 0x01, 0xdb}
	fake.write(in)
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	f, err := link.Recv(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Data, in) {
		t.Errorf("received %x, want %x", f.Data, in)
	}

	fake.mu.Lock()
	params := slices.Clone(fake.params)
	fake.mu.Unlock()
	wantCh, wantPAN := []byte{'!', 'V', 0, 1, 0, 15}, []byte{'!', 'V', 0, 2, 0xab, 0xcd}
	if !slices.ContainsFunc(params, func(p []byte) bool { return bytes.Equal(p, wantCh) }) ||
		!slices.ContainsFunc(params, func(p []byte) bool { return bytes.Equal(p, wantPAN) }) {
		t.Errorf("params %x lack channel 15 and PAN 0xabcd", params)
	}
	c := link.(radio.LinkCounterReporter).LinkCounters()
	if c.TxErrors != 1 {
		t.Logf("counters %+v", c) // refreshed once a second; informative only
	}
}
