package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary gatewaydBinary built, if it did.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// gatewaydBinary builds the command once per test run.
func gatewaydBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gatewayd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gatewayd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// notifySocket is a test-owned NOTIFY_SOCKET collecting what gatewayd
// tells systemd.
type notifySocket struct {
	path string
	c    *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

// len is how many messages arrived; msg returns one.
func (n *notifySocket) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.msgs)
}

func (n *notifySocket) msg(i int) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.msgs[i]
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ns") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify")}
	n.c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := n.c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// waitFor waits until a message containing want arrives after the first
// `after` messages, and returns its index.
func (n *notifySocket) waitFor(t *testing.T, want string, after int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		for i := after; i < len(n.msgs); i++ {
			if strings.Contains(n.msgs[i], want) {
				n.mu.Unlock()
				return i
			}
		}
		n.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t.Fatalf("no %q from gatewayd; got %q", want, n.msgs)
	return 0
}

func getWellKnown(t *testing.T, port int) error {
	t.Helper()
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{})
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := &coap.Message{Code: coap.GET}
	req.Options = req.Options.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))
	resp, err := e.Do(ctx, netipAddrPort(port), req)
	if err != nil {
		return err
	}
	if resp.Code != coap.Content {
		return fmt.Errorf("got %v", resp.Code)
	}
	return nil
}

func TestSystemdNotifyWatchdogReloadAndStop(t *testing.T) {
	ns := newNotifySocket(t)
	port := freePort(t)
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := writeFile(t, "g.toml", fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\n[metrics]\nlisten = %q\n", port, admin))
	cmd := exec.Command(gatewaydBinary(t), "-config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=2000000")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// WATCHDOG_PID is not set, so the watchdog is for this process.
	ready := ns.waitFor(t, "READY=1", 0)
	ns.waitFor(t, "STATUS=serving", 0)
	w := ns.waitFor(t, "WATCHDOG=1", ready)
	for range 2 { // pings keep coming while the probe passes
		w = ns.waitFor(t, "WATCHDOG=1", w+1)
	}

	// An invalid configuration on SIGHUP: RELOADING=1, READY=1, still serving.
	if err := os.WriteFile(cfgPath, []byte("[proxy]\nlisten = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mark := ns.len()
	cmd.Process.Signal(syscall.SIGHUP)
	r := ns.waitFor(t, "RELOADING=1", mark)
	if m := ns.msg(r); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	ns.waitFor(t, "READY=1", r)
	if err := getWellKnown(t, port); err != nil {
		t.Fatalf("not serving after an invalid reload: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "reload refused") {
		t.Fatalf("the refused reload is not logged:\n%s", stderr.String())
	}
	if m := scrape(t, admin); !strings.Contains(m, `gatewayd_reloads_total{outcome="failure"} 1`) || !strings.Contains(m, `gatewayd_reloads_total{outcome="success"} 0`) {
		t.Fatalf("reloads after a refused one:\n%s", grepLines(m, "reloads"))
	}
	// A valid one that changes a live setting.
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\ntimeout = \"2s\"\n[metrics]\nlisten = %q\n", port, admin)), 0o600)
	mark = ns.len()
	cmd.Process.Signal(syscall.SIGHUP)
	ns.waitFor(t, "READY=1", ns.waitFor(t, "RELOADING=1", mark))
	if err := getWellKnown(t, port); err != nil {
		t.Fatalf("not serving after a reload: %v", err)
	}
	if m := scrape(t, admin); !strings.Contains(m, `gatewayd_reloads_total{outcome="failure"} 1`) || !strings.Contains(m, `gatewayd_reloads_total{outcome="success"} 1`) {
		t.Fatalf("reloads after a good one:\n%s", grepLines(m, "reloads"))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	ns.waitFor(t, "STOPPING=1", 0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// activatedUDP starts gatewayd with configured listen entries and a UDP
// socket on 127.0.0.1 passed as systemd does; it returns the socket's
// port and the daemon's log.
func activatedUDP(t *testing.T, listen func(port int) string) (*exec.Cmd, int, *syncBuffer) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	f, err := pc.File()
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	cfgPath := writeFile(t, "g.toml", fmt.Sprintf("[proxy]\nlisten = [%s]\n[metrics]\nlisten = \"\"\n", listen(port)))
	// LISTEN_PID must be the child's pid, which is known only after fork:
	// a shell sets it and execs gatewayd.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, gatewaydBinary(t), "-config", cfgPath)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=coap")
	cmd.ExtraFiles = []*os.File{f} // fd 3
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, port, &stderr
}

func TestSocketActivationServesCoAP(t *testing.T) {
	_, port, stderr := activatedUDP(t, func(port int) string { return fmt.Sprintf("%q", fmt.Sprintf("udp://127.0.0.1:%d", port)) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := getWellKnown(t, port)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CoAP on the activated socket: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The log says which entry the passed socket serves. The socket may
	// serve before the line is written: wait for it.
	waitLog(t, stderr, 10*time.Second, "serving an inherited socket (socket activation) in place of binding",
		fmt.Sprintf("listen=udp://127.0.0.1:%d socket=coap kind=datagram", port))
}

// A passed socket whose address no listen entry names stops the start:
// serving it would leave the entry unserved, binding the entry too would
// serve two sockets where the operator meant one.
func TestSocketActivationRefusesASocketNoEntryNames(t *testing.T) {
	other := freePort(t)
	cmd, port, stderr := activatedUDP(t, func(int) string { return fmt.Sprintf("%q", fmt.Sprintf("udp://127.0.0.1:%d", other)) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("gatewayd exited 0\n%s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("gatewayd still runs\n%s", stderr.String())
	}
	want := fmt.Sprintf(`inherited datagram socket "coap" (127.0.0.1:%d) matches no [proxy] listen entry`, port)
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("no %q in:\n%s", want, stderr.String())
	}
}

func netipAddrPort(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}
