package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemd-socket-activate binds a TCP port and starts gatewayd only when
// the first client connects, passing the listening socket in LISTEN_FDS,
// as systemd does for ListenStream= in a socket unit. libcoap's
// coap-client connects before gatewayd exists: its answer can only come
// through the inherited socket, which the daemon's log names. (The
// resource directory gives /.well-known/core something to list.)
func TestSocketActivatedTCPServesLibcoapClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // for the activator to bind
	cfgPath := writeFile(t, "g.toml", fmt.Sprintf("[proxy]\nlisten = [\"tcp://%s\"]\n[metrics]\nlisten = \"\"\n[rd]\nenabled = true\n", addr))
	act := exec.Command("systemd-socket-activate", "-l", addr, "--fdname=coap-tcp", gatewaydBinary(t), "-config", cfgPath)
	var log syncBuffer
	act.Stderr = &log
	if err := act.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { act.Process.Kill(); act.Wait() })
	waitLog(t, &log, 10*time.Second, "Listening on "+addr)
	if strings.Contains(log.String(), "gatewayd started") {
		t.Fatalf("gatewayd started before any client connected:\n%s", log.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "coap-client-notls", "-m", "get", "-B", "20",
		"coap+tcp://"+addr+"/.well-known/core").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `</rd>;rt="core.rd"`) {
		t.Fatalf("coap-client: %v: %q\n%s", err, out, log.String())
	}
	waitLog(t, &log, 10*time.Second, "serving an inherited socket (socket activation) in place of binding",
		"listen=tcp://"+addr, "socket=coap-tcp", "kind=stream")

	// The activator execs gatewayd: its process is the daemon's now.
	act.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- act.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("gatewayd did not stop on SIGTERM:\n%s", log.String())
	}
}
