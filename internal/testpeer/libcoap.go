package testpeer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Libcoap is one coap-client-notls process (Debian libcoap3-bin) of a
// test that runs many at once. It writes the payloads it receives to a
// file of its own (-o) and its debug log (-v 7: every datagram it sends
// and receives) to another, so that a test can show what a client that
// misbehaved saw.
type Libcoap struct {
	out, log string
	cmd      *exec.Cmd
	done     chan error
}

// StartLibcoap starts client i of a test with args (method, URI and the
// rest) and ends it with ctx. Each client gets a loopback address of its
// own (ClientAddr).
func StartLibcoap(ctx context.Context, t *testing.T, i int, args ...string) *Libcoap {
	t.Helper()
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatalf("coap-client-notls (Debian libcoap3-bin) is needed: %v", err)
	}
	dir := t.TempDir()
	c := &Libcoap{out: filepath.Join(dir, "out"), log: filepath.Join(dir, "log"), done: make(chan error, 1)}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args = append([]string{"-a", ClientAddr(i), "-v", "7", "-o", c.out}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("coap-client %d: %v", i, err)
	}
	c.cmd = cmd
	go func() { c.done <- cmd.Wait() }()
	return c
}

// Wait waits for the process to end.
func (c *Libcoap) Wait() error { return <-c.done }

// Kill ends the process with SIGKILL, as a crash would: it deregisters
// nothing, and its socket closes with it. Wait then returns.
func (c *Libcoap) Kill() error { return c.cmd.Process.Kill() }

// Payloads is what the client received, payload after payload.
func (c *Libcoap) Payloads() string {
	b, _ := os.ReadFile(c.out)
	return string(b)
}

// Log is the client's debug log.
func (c *Libcoap) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// ClientAddr is a loopback address of client i's own (of up to 250), for libcoap
// clients that run at once. coap-client binds its socket to port 0 with
// SO_REUSEADDR, and Linux may then give two clients the same port; as
// every coap-client uses the token 0x01, two such clients on one address
// are a single endpoint to any server (RFC 7641 §3.6, §4.1: endpoint and
// token name an observer), and one of them gets the other's datagrams.
// On addresses of their own they cannot collide.
func ClientAddr(i int) string { return fmt.Sprintf("127.0.1.%d", i%250+1) }
