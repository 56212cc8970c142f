package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/radio/sim"
)

// daemon is one gatewayd process, with its stderr (the log) copied to a
// file and scanned for the addresses it binds and the reloads it makes.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its log is read
	err  error         // the exit status; read after done

	mu       sync.Mutex
	coap     netip.AddrPort // guarded by mu: the proxy's UDP address
	admin    string         // guarded by mu: host:port of /metrics and /status
	reloaded int            // guarded by mu: "reloaded" log lines
	refused  int            // guarded by mu: "reload refused" log lines
	errors   int            // guarded by mu: level=ERROR lines
	warnings int            // guarded by mu: level=WARN lines
	changed  chan struct{}  // closed and replaced whenever a field above changes
}

var (
	listenLine = regexp.MustCompile(`msg=listening .*scheme=udp addr=(\S+)`)
	adminLine  = regexp.MustCompile(`msg="admin endpoint" .*addr=(\S+)`)
)

// startDaemon runs bin -config cfg, appending its log to logPath.
func startDaemon(bin, cfg, logPath string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("soak: daemon log: %w", err)
	}
	d := &daemon{done: make(chan struct{}), changed: make(chan struct{})}
	d.cmd = exec.Command(bin, "-config", cfg, "-log-level", "info")
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	d.cmd.Stdout = logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("soak: start gatewayd: %w", err)
	}
	go func() {
		defer close(d.done)
		defer logf.Close()
		d.scan(io.TeeReader(stderr, logf))
		d.err = d.cmd.Wait()
	}()
	return d, nil
}

func (d *daemon) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		if m := listenLine.FindStringSubmatch(line); m != nil {
			if ap, err := netip.ParseAddrPort(m[1]); err == nil {
				d.coap = ap
			}
		}
		if m := adminLine.FindStringSubmatch(line); m != nil {
			d.admin = m[1]
		}
		switch {
		case strings.Contains(line, `msg="reload refused`):
			d.refused++
		case strings.Contains(line, "msg=reloaded"), strings.Contains(line, `msg="reloaded;`):
			d.reloaded++
		}
		if strings.Contains(line, "level=ERROR") {
			d.errors++
		}
		if strings.Contains(line, "level=WARN") {
			d.warnings++
		}
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// wait returns once cond, called under d.mu, holds.
func (d *daemon) wait(ctx context.Context, what string, cond func(d *daemon) bool) error {
	for {
		d.mu.Lock()
		ok, ch := cond(d), d.changed
		d.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-d.done:
			return fmt.Errorf("soak: gatewayd exited waiting for %s: %v", what, d.err)
		case <-ctx.Done():
			return fmt.Errorf("soak: waiting for %s: %w", what, ctx.Err())
		}
	}
}

func (d *daemon) addrs(ctx context.Context) (netip.AddrPort, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := d.wait(ctx, "the proxy's and the admin endpoint's addresses", func(d *daemon) bool {
		return d.coap.IsValid() && d.admin != ""
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.coap, d.admin, err
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// reload sends SIGHUP and waits for the log to say the reload happened.
func (d *daemon) reload(ctx context.Context) error {
	d.mu.Lock()
	before := d.reloaded + d.refused
	d.mu.Unlock()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.wait(ctx, "a reload", func(d *daemon) bool { return d.reloaded+d.refused > before }); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refused > 0 {
		return errors.New("soak: gatewayd refused a reload")
	}
	return nil
}

func (d *daemon) counts() (reloaded, errs, warnings int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reloaded, d.errors, d.warnings
}

// stop ends the process with SIGTERM, as systemd would, and waits.
func (d *daemon) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		return errors.New("soak: gatewayd did not stop within 15 s of SIGTERM")
	}
	var ee *exec.ExitError
	if d.err != nil && !errors.As(d.err, &ee) {
		return d.err
	}
	if d.err != nil {
		return fmt.Errorf("soak: gatewayd exited with %v", d.err)
	}
	return nil
}

// buildGatewayd builds the daemon from the module this program is in.
func buildGatewayd(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "gatewayd")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/opaque-edge/gatewayd/cmd/gatewayd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("soak: build gatewayd: %v\n%s", err, out)
	}
	return bin, nil
}

// simNode is the address of the i-th simulated node of a "sim" radio with
// the default prefix.
func simNode(i int) netip.Addr {
	return sim.NodeAddr(sim.DefaultPrefix, i)
}

// writeConfig writes the daemon's configuration atomically (a reload
// never reads half a file); extra adds a route, so that reloads change
// something.
func writeConfig(path string, origin netip.AddrPort, stateDir string, extra bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, `[proxy]
listen = ["udp://127.0.0.1:0"]
allow = ["127.0.0.0/8", "fd00::/8"]
clients = ["127.0.0.0/8"]
timeout = "5s"

[[route]]
name = "origin"
target = "coap://%v"

[[route]]
name = "node1"
target = "coap://[%v]"
`, origin, simNode(0))
	if extra {
		fmt.Fprintf(&b, `
[[route]]
name = "extra"
target = "coap://%v"
`, origin)
	}
	fmt.Fprintf(&b, `
[[radio]]
name = "sim"
driver = "sim"

[pubsub]
enabled = true
state_dir = %q
min_publish_interval = "0s"
admins = ["127.0.0.0/8"]

[metrics]
listen = "127.0.0.1:0"
`, stateDir)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
