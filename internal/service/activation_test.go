package service

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a socket-activated daemon
// instead of running tests: see TestMain.
const helperEnv = "GATEWAYD_SERVICE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "activated" {
		os.Exit(activatedHelper())
	}
	os.Exit(m.Run())
}

// activatedHelper is the child: it reports each socket it was given
// (name=kind@address), then answers one datagram on the first datagram
// socket with "pong " + payload.
func activatedHelper() int {
	socks, err := Sockets()
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	var names []string
	var pc net.PacketConn
	for _, s := range socks {
		names = append(names, fmt.Sprintf("%s=%s@%v", s.Name, s.Kind(), s.Addr))
		if pc == nil && !s.Stream() {
			pc = s.Packet
		}
	}
	for _, v := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			names = append(names, v+"-left")
		}
	}
	fmt.Println("sockets:", strings.Join(names, " "))
	os.Stdout.Sync()
	if pc == nil {
		return 0
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		fmt.Println("read:", err)
		return 1
	}
	if _, err := pc.WriteTo(append([]byte("pong "), buf[:n]...), from); err != nil {
		fmt.Println("write:", err)
		return 1
	}
	return 0
}

// activate runs the helper the way systemd would: the sockets as fds 3…
// and LISTEN_PID set to the helper's own PID (sh execs it, so $$ is the
// helper's PID).
func activate(t *testing.T, names string, files ...*os.File) (*exec.Cmd, *strings.Builder, *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=activated",
		fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+names)
	cmd.ExtraFiles = files
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); r.Close() })
	return cmd, &stderr, r
}

func readLine(t *testing.T, r *os.File) string {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(20 * time.Second))
	var b []byte
	one := make([]byte, 1)
	for {
		n, err := r.Read(one)
		if err != nil {
			t.Fatalf("helper output: %v (so far %q)", err, b)
		}
		if n == 1 && one[0] == '\n' {
			return string(b)
		}
		b = append(b, one[:n]...)
	}
}

func udpFile(t *testing.T) (*net.UDPConn, *os.File) {
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
	return c, f
}

func tcpFile(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); f.Close() })
	return l, f
}

func TestActivatedProcessKnowsEachSocketsKindAndAddress(t *testing.T) {
	coap, coapFile := udpFile(t)
	tcp, tcpFile := tcpFile(t)
	cmd, stderr, out := activate(t, "coap:coap-tcp", coapFile, tcpFile)

	want := fmt.Sprintf("sockets: coap=datagram@%v coap-tcp=stream@%v", coap.LocalAddr(), tcp.Addr())
	if got := readLine(t, out); got != want {
		t.Fatalf("helper said %q, want %q\n%s", got, want, stderr)
	}
	// The parent keeps nothing bound but its copy; the helper answers on
	// the socket it did not bind.
	c, err := net.DialUDP("udp", nil, coap.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	coap.Close() // only the helper reads the socket from here on
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer from the activated helper: %v\n%s", err, stderr)
	}
	if got := string(buf[:n]); got != "pong ping" {
		t.Fatalf("answer %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { <-ctx.Done(); cmd.Process.Kill() }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr)
	}
}

// A descriptor gatewayd cannot serve is refused with what is wrong with
// it, found by asking the kernel.
func TestActivatedSocketsItCannotServeAreRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		file func(t *testing.T) *os.File
		want string
	}{
		"a connected stream socket (Accept=yes)": {func(t *testing.T) *os.File {
			l, _ := tcpFile(t)
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			f, err := c.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, "is not listening (Accept=yes is not supported)"},
		"a pipe": {func(t *testing.T) *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			return r
		}, "not a socket"},
		"a unix socket": {func(t *testing.T) *os.File {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: t.TempDir() + "/s", Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			f, err := l.File()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, "is not an IPv4 or IPv6 socket"},
	} {
		t.Run(name, func(t *testing.T) {
			f := tc.file(t)
			defer f.Close()
			_, stderr, out := activate(t, "coap", f)
			got := readLine(t, out)
			if !strings.HasPrefix(got, `error: service: socket "coap": `) || !strings.Contains(got, tc.want) {
				t.Fatalf("helper said %q, want a service: socket error with %q\n%s", got, tc.want, stderr)
			}
		})
	}
}

func TestNoSocketActivationReturnsNothing(t *testing.T) {
	for name, env := range map[string][2]string{
		"no LISTEN_FDS":     {"", ""},
		"another process's": {"3", fmt.Sprint(os.Getpid() + 1)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("LISTEN_FDS", env[0])
			t.Setenv("LISTEN_PID", env[1])
			socks, err := Sockets()
			if err != nil || len(socks) != 0 {
				t.Fatalf("Sockets = %v, %v; want none", socks, err)
			}
		})
	}
}

// A link-local socket's address carries its interface, as the listen
// entry it must match does ("udp://[fe80::1%eth0]:5683").
func TestSocketAddressNamesTheInterfaceOfALinkLocalOne(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	ll := [16]byte{0: 0xfe, 1: 0x80, 15: 1}
	for _, tc := range []struct {
		sa   syscall.Sockaddr
		want string
	}{
		{&syscall.SockaddrInet6{Addr: ll, Port: 5683, ZoneId: uint32(lo.Index)}, "[fe80::1%lo]:5683"},
		{&syscall.SockaddrInet6{Port: 5683}, "[::]:5683"},
		{&syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 5683}, "127.0.0.1:5683"},
	} {
		got, err := sockaddrAddr(tc.sa)
		if err != nil || got.String() != tc.want {
			t.Errorf("%+v: %v, %v; want %s", tc.sa, got, err, tc.want)
		}
	}
}
