package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// notifySocket is a test-owned NOTIFY_SOCKET collecting what gatewayd
// tells systemd.
type notifySocket struct {
	path    string
	c       *net.UnixConn
	mu      sync.Mutex
	msgs    []string      // guarded by mu
	arrived chan struct{} // guarded by mu: closed when the next message arrives
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
			if n.arrived != nil {
				close(n.arrived)
				n.arrived = nil
			}
			n.mu.Unlock()
		}
	}()
	return n
}

// waitFor waits until a message containing want arrives after the first
// `after` messages, and returns its index.
func (n *notifySocket) waitFor(t *testing.T, want string, after int) int {
	t.Helper()
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for {
		n.mu.Lock()
		for i := after; i < len(n.msgs); i++ {
			if strings.Contains(n.msgs[i], want) {
				n.mu.Unlock()
				return i
			}
		}
		after = len(n.msgs)
		if n.arrived == nil {
			n.arrived = make(chan struct{})
		}
		arrived := n.arrived
		n.mu.Unlock()
		select {
		case <-arrived:
		case <-timeout.C:
			n.mu.Lock()
			defer n.mu.Unlock()
			t.Fatalf("no %q from gatewayd; got %q", want, n.msgs)
			return 0
		}
	}
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
	g := startGatewayd(t, fmt.Sprintf("[proxy]\nlisten = [\"udp://127.0.0.1:%d\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n", port),
		withEnv("NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=2000000"))
	admin := g.adminAddr(t) // written as bound into the reloaded file: the admin endpoint is not rebound
	cfgPath, stderr := g.config, g.log
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
	g.signal(t, syscall.SIGHUP)
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
	g.signal(t, syscall.SIGHUP)
	ns.waitFor(t, "READY=1", ns.waitFor(t, "RELOADING=1", mark))
	if err := getWellKnown(t, port); err != nil {
		t.Fatalf("not serving after a reload: %v", err)
	}
	if m := scrape(t, admin); !strings.Contains(m, `gatewayd_reloads_total{outcome="failure"} 1`) || !strings.Contains(m, `gatewayd_reloads_total{outcome="success"} 1`) {
		t.Fatalf("reloads after a good one:\n%s", grepLines(m, "reloads"))
	}
	g.signal(t, syscall.SIGTERM)
	ns.waitFor(t, "STOPPING=1", 0)
	if err := g.wait(t, startTimeout); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// activatedUDP starts gatewayd with configured listen entries and a UDP
// socket on 127.0.0.1 passed as systemd does; it returns the daemon and
// the socket's port.
func activatedUDP(t *testing.T, listen func(port int) string, opts ...startOption) (*instance, int) {
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
	config := fmt.Sprintf("[proxy]\nlisten = [%s]\n[metrics]\nlisten = \"\"\n", listen(port))
	return startGatewayd(t, config, append(opts, socketActivated("coap", f))...), port // fd 3
}

func TestSocketActivationServesCoAP(t *testing.T) {
	g, port := activatedUDP(t, func(port int) string { return fmt.Sprintf("%q", fmt.Sprintf("udp://127.0.0.1:%d", port)) })
	if err := getWellKnown(t, port); err != nil {
		t.Fatalf("no CoAP on the activated socket: %v\n%s", err, g.log.String())
	}
	// The log says which entry the passed socket serves. The socket may
	// serve before the line is written: wait for it.
	waitLog(t, g.log, 10*time.Second, "serving an inherited socket (socket activation) in place of binding",
		fmt.Sprintf("listen=udp://127.0.0.1:%d socket=coap kind=datagram", port))
}

// A passed socket whose address no listen entry names stops the start:
// serving it would leave the entry unserved, binding the entry too would
// serve two sockets where the operator meant one.
func TestSocketActivationRefusesASocketNoEntryNames(t *testing.T) {
	other := freePort(t)
	g, port := activatedUDP(t, func(int) string { return fmt.Sprintf("%q", fmt.Sprintf("udp://127.0.0.1:%d", other)) }, notWaitingToStart())
	if err := g.wait(t, 20*time.Second); err == nil {
		t.Fatalf("gatewayd exited 0\n%s", g.log.String())
	}
	want := fmt.Sprintf(`inherited datagram socket "coap" (127.0.0.1:%d) matches no [proxy] listen entry`, port)
	if !strings.Contains(g.log.String(), want) {
		t.Fatalf("no %q in:\n%s", want, g.log.String())
	}
}

func netipAddrPort(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}
