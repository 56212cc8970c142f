package bridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/service"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// Environment of the socket-activated child (inheritedProxy): its listen
// entries, space-separated, and the TLS certificate and key files.
const (
	inheritEnv     = "GATEWAYD_BRIDGE_INHERIT_LISTEN"
	inheritCertEnv = "GATEWAYD_BRIDGE_INHERIT_CERT"
)

// inheritedProxy is the child a socket-activated test runs: it takes the
// sockets passed in LISTEN_FDS as gatewayd does, starts a proxy with
// them, says "serving" or "error: …" on stdout, and serves until stdin
// closes.
func inheritedProxy() int {
	socks, err := service.Sockets()
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	cfg := Defaults()
	cfg.Proxy.Listen = strings.Fields(os.Getenv(inheritEnv))
	cfg.Metrics.Listen = ""
	if cert := os.Getenv(inheritCertEnv); cert != "" {
		cfg.Proxy.CertFile, cfg.Proxy.KeyFile = cert+".pem", cert+".key"
	}
	if err := cfg.Validate(); err != nil {
		fmt.Println("error:", err)
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := New(context.Background(), cfg, log, WithSockets(socks))
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	defer p.Close()
	fmt.Println("serving")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// startInherited runs inheritedProxy with files as fds 3… the way systemd
// does (LISTEN_PID is the child's own PID: sh execs it) and returns its
// first line.
func startInherited(t *testing.T, listen []string, cert string, files ...*os.File) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, exe)
	cmd.Env = append(os.Environ(), inheritEnv+"="+strings.Join(listen, " "), inheritCertEnv+"="+cert,
		fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES=sock")
	cmd.ExtraFiles = files
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child's log:\n%s", stderr.String())
		}
	})
	return strings.TrimSpace(line)
}

func listenTCP(t *testing.T) (netip.AddrPort, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	// The parent keeps its copy open until the test ends: were the child
	// to bind the address itself, it would fail (address in use).
	t.Cleanup(func() { l.Close(); f.Close() })
	return l.Addr().(*net.TCPAddr).AddrPort(), f
}

func listenUDPFile(t *testing.T) (netip.AddrPort, *os.File) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); f.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), f
}

var wellKnownCore = coap.Options{}.Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))

// Stream sockets passed by systemd serve the tcp://, tls://, ws:// and
// wss:// entries of their addresses, a datagram socket the udp:// one,
// whatever order systemd passed them in; the parent holds each address
// bound throughout, so an answer on it comes from the inherited socket.
func TestInheritedSocketsServeTheirListenEntries(t *testing.T) {
	pki := testpeer.NewPKI(t)
	tcpA, tcpF := listenTCP(t)
	tlsA, tlsF := listenTCP(t)
	wsA, wsF := listenTCP(t)
	wssA, wssF := listenTCP(t)
	udpA, udpF := listenUDPFile(t)
	listen := []string{"udp://" + udpA.String(), "tcp://" + tcpA.String(), "tls://" + tlsA.String(),
		"ws://" + wsA.String() + "/coap", "wss://" + wssA.String()}
	if got := startInherited(t, listen, strings.TrimSuffix(pki.File("server.pem"), ".pem"), wssF, udpF, wsF, tcpF, tlsF); got != "serving" {
		t.Fatalf("child said %q", got)
	}
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	tc := &tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := map[string]func() (*stream.Conn, error){
		"tcp": func() (*stream.Conn, error) { return cl.Dial(ctx, tcpA.String(), nil) },
		"tls": func() (*stream.Conn, error) { return cl.Dial(ctx, tlsA.String(), tc) },
		"ws":  func() (*stream.Conn, error) { return cl.DialWS(ctx, "ws://"+wsA.String()+"/coap", nil) },
		"wss": func() (*stream.Conn, error) {
			return cl.DialWS(ctx, "wss://"+wssA.String()+wsPath, &http.Client{Transport: &http.Transport{TLSClientConfig: tc}})
		},
	}
	for scheme, d := range dial {
		c, err := d()
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		if resp := doStream(t, c, &coap.Message{Code: coap.GET, Options: wellKnownCore}); resp.Code != coap.Content {
			t.Fatalf("%s: %v", scheme, resp.Code)
		}
	}
	e := client(t)
	resp, err := e.Do(ctx, udpA, &coap.Message{Code: coap.GET, Options: wellKnownCore})
	if err != nil || resp.Code != coap.Content {
		t.Fatalf("udp: %v, %v", resp, err)
	}
}

// A socket that fits no entry, or fits one of the other kind, stops the
// start with an error that names the socket, its address and the entry.
func TestInheritedSocketsThatFitNoEntryAreRefused(t *testing.T) {
	tcpA, tcpF := listenTCP(t)
	udpA, udpF := listenUDPFile(t)
	for name, tc := range map[string]struct {
		listen []string
		file   *os.File
		want   string
	}{
		"stream socket, no entry": {[]string{"udp://127.0.0.1:0"}, tcpF,
			fmt.Sprintf(`error: bridge: inherited stream socket "sock" (%v) matches no [proxy] listen entry`, tcpA)},
		"stream socket, udp entry": {[]string{"udp://" + tcpA.String()}, tcpF,
			fmt.Sprintf(`error: bridge: inherited stream socket "sock" (%v) matches listen entry udp://%v, which needs a datagram socket`, tcpA, tcpA)},
		"datagram socket, tcp entry": {[]string{"tcp://" + udpA.String()}, udpF,
			fmt.Sprintf(`error: bridge: inherited datagram socket "sock" (%v) matches listen entry tcp://%v, which needs a stream socket`, udpA, udpA)},
		"datagram socket, other port": {[]string{"udp://127.0.0.1:1"}, udpF,
			fmt.Sprintf(`error: bridge: inherited datagram socket "sock" (%v) matches no [proxy] listen entry`, udpA)},
	} {
		t.Run(name, func(t *testing.T) {
			if got := startInherited(t, tc.listen, "", tc.file); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("child said\n%q, want\n%q…", got, tc.want)
			}
		})
	}
}

func TestInheritedAddressMatching(t *testing.T) {
	for _, tc := range []struct {
		entry, sock string
		want        bool
	}{
		{"127.0.0.1:5683", "127.0.0.1:5683", true},
		{"[::]:5683", "[::]:5683", true},
		{"0.0.0.0:5683", "[::]:5683", true},
		{"[::]:5683", "0.0.0.0:5683", true},
		{"127.0.0.1:5683", "[::ffff:127.0.0.1]:5683", true},
		{"127.0.0.1:5683", "127.0.0.1:5684", false},
		{"127.0.0.1:5683", "[::]:5683", false},
		{"[::]:5683", "127.0.0.1:5683", false},
	} {
		if got := sameAddr(netip.MustParseAddrPort(tc.entry), netip.MustParseAddrPort(tc.sock)); got != tc.want {
			t.Errorf("entry %s, socket %s: %v, want %v", tc.entry, tc.sock, got, tc.want)
		}
	}
}
