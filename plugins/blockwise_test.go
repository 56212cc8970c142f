package plugins

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe"
	"github.com/opaque-edge/gatewayd/observe/observetest"
)

// libcoapOrigin is libcoap's coap-server on 127.0.0.1: its /example_data
// takes PUT bodies (in Block1 blocks) and serves them in 1024-byte Block2
// blocks with ETag and Size2, notifying observers with block 0.
func libcoapOrigin(t *testing.T) netip.AddrPort {
	t.Helper()
	bin, err := exec.LookPath("coap-server-notls")
	if err != nil {
		t.Fatalf("coap-server-notls (Debian libcoap3-bin) is needed: %v", err)
	}
	// A free UDP port: taken, then given back for the server to bind.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	cmd := exec.Command(bin, "-A", "127.0.0.1", "-p", fmt.Sprint(addr.Port()), "-v", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	until(t, "coap-server to answer", func() bool {
		out, _ := exec.Command("coap-client-notls", "-B", "1", fmt.Sprintf("coap://%s/", addr)).CombinedOutput()
		return strings.Contains(string(out), "libcoap")
	})
	return addr
}

// putLibcoap sets the origin's /example_data with libcoap's own client.
func putLibcoap(t *testing.T, origin netip.AddrPort, body []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("coap-client-notls", "-m", "put", "-f", f, fmt.Sprintf("coap://%s/example_data", origin)).CombinedOutput(); err != nil {
		t.Fatalf("coap-client put: %v\n%s", err, out)
	}
}

func randomBody(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// digestOf is what the echo plugin records with "digest" set.
func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%d:%x", len(b), h[:8])
}

func largeObserverConfig() Config {
	c := observerConfig("example_data")
	c.Config["digest"] = true
	return c
}

// A front end's Host.Observe of a 10 KiB resource gets each
// representation whole (RFC 7959 §2.6): the hub's notification carries
// block 0, and gatewayd fetches the rest with Block2 before the plugin
// sees it.
func TestFrontEndObservesALargeResourceWhole(t *testing.T) {
	origin := libcoapOrigin(t)
	first, second := randomBody(10240), randomBody(10240)
	putLibcoap(t, origin, first)
	up, _ := coapEndpoint(t, coap.EndpointConfig{})
	hub := observe.New(observe.Defaults())
	t.Cleanup(func() { hub.Close() })
	h := newHost(t, hub.Stage(observetest.Route(up, origin)), largeObserverConfig())
	tr := translator(t, h, "fe")

	waitObserved(t, tr, digestOf(first))
	putLibcoap(t, origin, second)
	waitObserved(t, tr, digestOf(first)+","+digestOf(second))
	if s := h.Stats()[0]; s.Blockwise < 2 || s.TooLarge != 0 {
		t.Errorf("stats %+v, want two block-wise transfers", s)
	}
	if s := hub.Stats(); s.Observers != 1 || s.Upstreams != 1 {
		t.Errorf("hub %+v, want the plugin as its one observer", s)
	}
}

// Over the plugin's max_body, Host.Observe ends with an error that says
// so (a *blockwise.TooLargeError across the boundary), the plugin is
// given nothing of the representation, and its observer is
// deregistered.
func TestFrontEndObserveOverMaxBodyEndsWithTooLarge(t *testing.T) {
	origin := libcoapOrigin(t)
	putLibcoap(t, origin, randomBody(10240))
	up, _ := coapEndpoint(t, coap.EndpointConfig{})
	hub := observe.New(observe.Defaults())
	t.Cleanup(func() { hub.Close() })
	cfg := largeObserverConfig()
	cfg.MaxBody = 4096
	h := newHost(t, hub.Stage(observetest.Route(up, origin)), cfg)
	tr := translator(t, h, "fe")
	var got, end string
	until(t, "the observation to end", func() bool {
		got, end = observed(t, tr)
		return end != ""
	})
	if got != "" || !strings.HasPrefix(end, "too large: 10240 over 4096") {
		t.Fatalf("plugin observed %q, ended %q", got, end)
	}
	until(t, "the plugin's deregistration", func() bool {
		s := hub.Stats()
		return s.Observers == 0 && s.Upstreams == 0
	})
	if s := h.Stats()[0]; s.TooLarge != 1 {
		t.Errorf("TooLarge %d, want 1", s.TooLarge)
	}
}

func TestConfigBoundsMaxBodyAndBlockSize(t *testing.T) {
	base := Config{Name: "p", Path: "/bin/true", SHA256: strings.Repeat("0", 64)}
	d := base.Defaults()
	if d.MaxBody != 1<<20 || d.BlockSize != 1024 || d.Validate() != nil {
		t.Fatalf("defaults: max_body %d block_size %d: %v", d.MaxBody, d.BlockSize, d.Validate())
	}
	for _, c := range []struct {
		maxBody, blockSize int
		want               string
	}{
		{-1, 0, "max_body = -1"},
		{4<<20 + 1, 0, "max_body = 4194305"},
		{0, 100, "block_size = 100"},
		{0, 2048, "block_size = 2048"},
		{0, 8, "block_size = 8"},
	} {
		cfg := base
		cfg.MaxBody, cfg.BlockSize = c.maxBody, c.blockSize
		if err := cfg.Defaults().Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("max_body %d block_size %d: %v, want %q", c.maxBody, c.blockSize, err, c.want)
		}
	}
	ok := base
	ok.MaxBody, ok.BlockSize = 4<<20, 16
	if err := ok.Defaults().Validate(); err != nil {
		t.Errorf("the bounds themselves: %v", err)
	}
}
