// Package testpeer starts the real peers that tests talk to and that the
// test command installs (Debian packages), for tests in more than one
// package.
package testpeer

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a real mosquitto broker on 127.0.0.1 with persistence, so
// that Stop (SIGTERM: it saves its state) and Start on the same port keep
// sessions and queued messages.
type Mosquitto struct {
	Port int

	t    *testing.T
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMosquitto starts a broker on a free port; the test's cleanup stops
// it. A missing mosquitto fails the test: the test command installs it.
func StartMosquitto(t *testing.T) *Mosquitto {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Fatal("mosquitto not found (Debian package mosquitto): run `make deps`")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	m := &Mosquitto{Port: port, t: t, conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 10000\n", port, dir)
	if os.Getuid() == 0 {
		// Else mosquitto drops root for user mosquitto, who cannot write
		// the test's directory.
		conf += "user root\n"
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Addr is host:port.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)) }

// URL is mqtt://host:port.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr() }

// Start runs the broker (again) and waits until it listens.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.cmd = exec.Command("mosquitto", "-c", m.conf)
	logf, err := os.OpenFile(m.conf+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.done)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
	}
	m.t.Fatal("mosquitto did not start listening")
}

// Stop ends the broker with SIGTERM (it saves its persistence) and waits.
// Idempotent.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Log is what the broker wrote.
func (m *Mosquitto) Log() string {
	out, _ := os.ReadFile(m.conf + ".log")
	return string(out)
}
