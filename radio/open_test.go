package radio_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/testutil"

	"golang.org/x/sys/unix"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// simRadio opens a "sim" radio and an endpoint on its Conn, closed at the
// end of the test, and waits for the link.
func simRadio(t *testing.T, edit func(*radio.Config)) (*radio.Radio, *coap.Endpoint, *sim.Network) {
	t.Helper()
	cfg := radio.Config{Name: "sim0", Driver: "sim", Channel: 15, PANID: 0xFACE}
	if edit != nil {
		edit(&cfg)
	}
	r, err := radio.Open(ctxT(t, 10*time.Second), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.WaitUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatalf("link not up: %v", err)
	}
	ep := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params()})
	t.Cleanup(func() { ep.Close() })
	n, ok := sim.FromLink(r.Link())
	if !ok {
		t.Fatalf("link %T is not a sim.Network", r.Link())
	}
	return r, ep, n
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func request(code coap.Code, path string, payload []byte) *coap.Message {
	m := &coap.Message{Type: coap.Confirmable, Code: code, Payload: payload}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		m.Options = m.Options.Insert(coap.URIPath, []byte(seg))
	}
	if payload != nil {
		m.Options = m.Options.SetUint(coap.ContentFormat, 0)
	}
	return m
}

func do(t *testing.T, ep *coap.Endpoint, to netip.Addr, req *coap.Message) *coap.Message {
	t.Helper()
	resp, err := ep.Do(ctxT(t, 30*time.Second), netip.AddrPortFrom(to, 5683), req)
	if err != nil {
		t.Fatalf("%v %v: %v", req.Code, to, err)
	}
	return resp
}

func TestOpenSimServesCoAPThroughSpinelOverPty(t *testing.T) {
	pcapPath := filepath.Join(t.TempDir(), "radio.pcap")
	r, ep, n := simRadio(t, func(c *radio.Config) { c.PCAP = pcapPath })

	nodes := r.Nodes()
	if len(nodes) != sim.DefaultNodes {
		t.Fatalf("nodes %v, want %d", nodes, sim.DefaultNodes)
	}
	want := netip.MustParseAddr("fd00:db8:1::1")
	if nodes[0] != want || !r.Contains(nodes[0]) {
		t.Fatalf("node 0 at %v (contained: %v), want %v", nodes[0], r.Contains(nodes[0]), want)
	}

	resp := do(t, ep, nodes[0], request(coap.GET, "/sensors/temp", nil))
	if resp.Code != coap.Content {
		t.Fatalf("GET temp: %v", resp.Code)
	}
	if cf, ok := resp.Options.Uint(coap.ContentFormat); !ok || cf != 0 {
		t.Errorf("content format %v %v, want 0", cf, ok)
	}
	if age, ok := resp.Options.Uint(coap.MaxAge); !ok || age < 1 || age > 3 {
		t.Errorf("Max-Age %v %v, want 1–3", age, ok)
	}
	if !resp.Options.Has(coap.ETag) {
		t.Error("no ETag")
	}
	if v, err := strconv.ParseFloat(string(resp.Payload), 64); err != nil || v < 20 || v > 30 {
		t.Errorf("temperature %q", resp.Payload)
	}

	if resp := do(t, ep, nodes[1], request(coap.PUT, "/actuators/valve", []byte("open"))); resp.Code != coap.Changed {
		t.Fatalf("PUT valve: %v", resp.Code)
	}
	if resp := do(t, ep, nodes[1], request(coap.GET, "/actuators/valve", nil)); string(resp.Payload) != "open" {
		t.Fatalf("valve %q after PUT open", resp.Payload)
	}
	if resp := do(t, ep, nodes[1], request(coap.PUT, "/actuators/valve", []byte("ajar"))); resp.Code != coap.BadRequest {
		t.Fatalf("PUT valve ajar: %v, want 4.00", resp.Code)
	}
	if got := n.SimNodes()[1].Valve(); got != "open" {
		t.Fatalf("node 1 valve %q", got)
	}

	// 400 octets each way: fragmented by the gateway, reassembled by the
	// node, and back.
	big := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz!"), 11)[:400]
	resp = do(t, ep, nodes[2], request(coap.POST, "/echo", big))
	if resp.Code != coap.Changed || !bytes.Equal(resp.Payload, big) {
		t.Fatalf("echo: %v, %d octets back", resp.Code, len(resp.Payload))
	}
	if c := r.Counters(); c.Conn.Reassembly.Reassembled == 0 || !c.Up || c.Link.TxFrames < 5 {
		t.Errorf("counters %+v: want a reassembled datagram, up, frames sent", c)
	}
	for i, node := range n.SimNodes() {
		if want := []uint64{1, 3, 1}[i]; node.Requests() != want {
			t.Errorf("node %d served %d requests, want %d", i, node.Requests(), want)
		}
	}
	if s := n.Air().Stats(); s.Frames < 10 {
		t.Errorf("air stats %+v", s)
	}

	ep.Close()
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkCapture(t, pcapPath, r.Prefix(), big)
}

// checkCapture has tshark decode the capture down to CoAP. tshark is a
// test dependency the project's test command installs, so its absence is
// a failure.
func checkCapture(t *testing.T, path string, prefix netip.Prefix, big []byte) {
	t.Helper()
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark not installed (Debian package tshark); the capture cannot be checked")
	}
	home := t.TempDir() // no user preferences
	run := func(args ...string) string {
		t.Helper()
		args = append([]string{"-r", path, "-d", "udp.port==5683,coap", "-o", "6lowpan.context0:" + prefix.String()}, args...)
		cmd := exec.Command(tshark, args...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %v: %v\n%s", args, err, stderr.Bytes())
		}
		return string(out)
	}
	summary := run()
	t.Logf("tshark:\n%s", summary)
	if strings.Contains(summary, "Malformed") {
		t.Error("tshark reports a malformed packet")
	}
	if bad := strings.TrimSpace(run("-Y", `_ws.malformed || _ws.expert.severity >= "error" || wpan.fcs.bad`)); bad != "" {
		t.Errorf("tshark finds errors:\n%s", bad)
	}
	frames := strings.Fields(run("-T", "fields", "-e", "wpan.fcs_ok"))
	if len(frames) < 10 || slices.ContainsFunc(frames, func(s string) bool { return s != "1" && s != "True" }) {
		t.Errorf("FCS checks of %d frames: %v", len(frames), frames)
	}
	// One row per CoAP message: code|Uri-Path|payload length|payload text.
	rows := strings.Split(run("-Y", "coap", "-T", "fields", "-E", "separator=|",
		"-e", "coap.code", "-e", "coap.opt.uri_path_recon", "-e", "coap.payload_length", "-e", "text"), "\n")
	has := func(code coap.Code, path string, length int, text string) bool {
		return slices.ContainsFunc(rows, func(row string) bool {
			f := strings.SplitN(row, "|", 4)
			return len(f) == 4 && f[0] == strconv.Itoa(int(code)) && f[1] == path &&
				(length < 0 || f[2] == strconv.Itoa(length)) && strings.Contains(f[3], text)
		})
	}
	for _, c := range []struct {
		code   coap.Code
		path   string
		length int
		text   string
	}{
		{coap.GET, "/sensors/temp", -1, ""},
		{coap.Content, "/sensors/temp", 4, "."},
		{coap.PUT, "/actuators/valve", 4, "open"},
		{coap.Changed, "/actuators/valve", -1, ""},
		{coap.POST, "/echo", len(big), string(big[:40])},
		{coap.Changed, "/echo", len(big), string(big[:40])},
	} {
		if !has(c.code, c.path, c.length, c.text) {
			t.Errorf("tshark shows no %v %s with payload %d %q in:\n%s", c.code, c.path, c.length, c.text, strings.Join(rows, "\n"))
		}
	}
}

// The dongle's device path goes away and comes back: requests meanwhile
// fail fast with ErrDown, and once the path is back the radio comes up by
// itself and the nodes answer again. The time from the path's return to
// the first answer is logged.
func TestRadioRecoversWhenPtyReturns(t *testing.T) {
	r, ep, n := simRadio(t, func(c *radio.Config) { c.AckTimeout = radio.Duration{Duration: time.Second} })
	node := r.Nodes()[0]
	do(t, ep, node, request(coap.GET, "/sensors/temp", nil))

	if err := n.Port().Unplug(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "link down after unplug", func() bool { return !r.Up() })
	if _, err := os.Stat(n.Port().Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("port path after unplug: %v", err)
	}
	if err := r.Conn().WriteTo(ctxT(t, 5*time.Second), []byte{0x40, 0, 0, 1}, netip.AddrPortFrom(node, 5683)); !errors.Is(err, radio.ErrDown) {
		t.Fatalf("write while unplugged: %v, want ErrDown", err)
	}
	retries := n.Stats().Retries
	testutil.Eventually(t, "the driver to look for the device and not find it", func() bool { return n.Stats().Retries >= retries+3 })

	if err := n.Port().Plug(); err != nil {
		t.Fatal(err)
	}
	plugged := time.Now()
	if err := r.WaitUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatalf("not up again: %v (counters %+v)", err, r.Counters())
	}
	up := time.Since(plugged)
	if resp := do(t, ep, node, request(coap.GET, "/sensors/temp", nil)); resp.Code != coap.Content {
		t.Fatalf("GET after replug: %v", resp.Code)
	}
	t.Logf("device path back → radio up in %v, CoAP answer in %v", up.Round(time.Millisecond), time.Since(plugged).Round(time.Millisecond))
	if c := r.Counters(); c.Link.Reconnects == 0 {
		t.Errorf("reconnects not counted: %+v", c.Link)
	}
}

func TestCloseLeavesNoGoroutinesOrFiles(t *testing.T) {
	waitQuiet := func() (int, int) {
		// Let goroutines of earlier tests (timers, pollers) finish.
		prev := -1
		for range 50 {
			g := runtime.NumGoroutine()
			if g == prev {
				break
			}
			prev = g
			time.Sleep(20 * time.Millisecond)
		}
		return runtime.NumGoroutine(), fdCount(t)
	}
	g0, fd0 := waitQuiet()

	cfg := radio.Config{Name: "leak", Driver: "sim", PCAP: filepath.Join(t.TempDir(), "c.pcap")}
	r, err := radio.Open(ctxT(t, 10*time.Second), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, _ := sim.FromLink(r.Link())
	dir := filepath.Dir(n.Port().Path())
	ep := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params()})
	do(t, ep, r.Nodes()[0], request(coap.GET, "/sensors/temp", nil))
	if runtime.NumGoroutine() <= g0 || fdCount(t) <= fd0 {
		t.Fatalf("nothing started? goroutines %d→%d, fds %d→%d", g0, runtime.NumGoroutine(), fd0, fdCount(t))
	}
	ep.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	var g, fd int
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<20)
			t.Logf("after Close: goroutines %d (before %d), fds %d (before %d)\n%s", g, g0, fd, fd0, buf[:runtime.Stack(buf, true)])
		}
	}()
	testutil.Eventually(t, "goroutines and fds back to their count before Open", func() bool {
		g, fd = runtime.NumGoroutine(), fdCount(t)
		return g <= g0 && fd <= fd0
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary port directory %s left behind: %v", dir, err)
	}
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A spinel radio whose dongle is absent at start still opens (down,
// reconnecting) instead of failing the daemon's start: its extended
// address is derived, not read from the device.
func TestOpenSpinelWithTheDongleAbsent(t *testing.T) {
	cfg := radio.Config{Name: "absent", Driver: "spinel", Device: filepath.Join(t.TempDir(), "no-such-tty"), Prefix: netip.MustParsePrefix("fd00:db8:9::/64")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := radio.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open with the dongle absent: %v", err)
	}
	defer r.Close()
	if r.Up() {
		t.Fatal("a radio without its device is up")
	}
	e, ok := r.ExtAddr().Extended()
	if !ok || e[0]&0x02 == 0 || e[0]&0x01 != 0 {
		t.Fatalf("derived address %v is not a locally administered unicast EUI-64", r.ExtAddr())
	}
	r2, err := radio.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.ExtAddr() != r.ExtAddr() {
		t.Fatal("the derived address is not stable")
	}
}

// rtscts reaches the serial port: on by default, off when the config says
// so, and a radio works either way (a pty keeps the flag and ignores it).
func TestRTSCTSConfigReachesThePort(t *testing.T) {
	for _, tt := range []struct {
		name   string
		doc    string
		rtscts bool
	}{
		{"default", "[[radio]]\nname = \"sim0\"\ndriver = \"sim\"\n", true},
		{"rtscts = false", "[[radio]]\nname = \"sim0\"\ndriver = \"sim\"\nrtscts = false\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := decode(t, tt.doc)[0]
			r, ep, n := simRadio(t, func(c *radio.Config) { *c = cfg })
			tio, err := n.Port().Termios()
			if err != nil {
				t.Fatal(err)
			}
			if got := tio.Cflag&unix.CRTSCTS != 0; got != tt.rtscts {
				t.Errorf("CRTSCTS %v, want %v", got, tt.rtscts)
			}
			if got := tio.Cflag & unix.CBAUD; got != unix.B460800 {
				t.Errorf("CBAUD %#o, want B460800", got)
			}
			if resp := do(t, ep, r.Nodes()[0], request(coap.GET, "/sensors/temp", nil)); resp.Code != coap.Content {
				t.Fatalf("GET: %v", resp.Code)
			}
		})
	}
}
