package testpeer

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// NodeCoapRequest is what the node-coap client (nodecoap/client.js)
// sends: a request to Host:Port, or Observe registrations of as many
// observers, each with a socket of its own.
type NodeCoapRequest struct {
	Host     string `json:"host"`
	Port     uint16 `json:"port"`
	Method   string `json:"method,omitempty"`
	ProxyURI string `json:"proxyUri,omitempty"`
	// Pathname is Uri-Path, "/"-separated.
	Pathname string `json:"pathname,omitempty"`
	// Options are set by name (node-coap's names: "Proxy-Scheme",
	// "Uri-Host", "Content-Format", ...) to these bytes.
	Options map[string][]byte `json:"-"`
	Payload []byte            `json:"payload,omitempty"`
	Observe int               `json:"observe,omitempty"`
	// TimeoutMs bounds the whole run in the script (default 20 s).
	TimeoutMs int `json:"timeoutMs,omitempty"`
}

func (r NodeCoapRequest) spec() ([]byte, error) {
	type plain NodeCoapRequest
	opts := map[string]map[string]string{}
	for name, v := range r.Options {
		opts[name] = map[string]string{"hex": hex.EncodeToString(v)}
	}
	return json.Marshal(struct {
		plain
		Options map[string]map[string]string `json:"options,omitempty"`
	}{plain(r), opts})
}

// NodeCoapResponse is one response or notification as node-coap decoded
// it. Obs is the observer it came to, -1 for a plain request.
type NodeCoapResponse struct {
	Obs     int         `json:"obs"`
	Code    string      `json:"code"`
	Observe *int        `json:"observe"`
	Options [][2]string `json:"options"` // name, hex value; in order
	// Headers are the option values as node-coap reads them (Max-Age a
	// number, Content-Format a media type name).
	Headers map[string]any `json:"headers"`
	Payload []byte         `json:"payload"`
	Error   string         `json:"error"`
	Closed  bool           `json:"closed"`
}

// Option returns the first value of the named option.
func (r NodeCoapResponse) Option(name string) ([]byte, bool) {
	for _, o := range r.Options {
		if o[0] == name {
			b, err := hex.DecodeString(o[1])
			return b, err == nil
		}
	}
	return nil, false
}

// nodeCoapScript is client.js, failing t when node or the installed
// node-coap module is missing: scripts/test-deps.sh installs both.
func nodeCoapScript(t testing.TB) (node, script string) {
	t.Helper()
	return nodeScript(t, "coap", "client.js")
}

// nodeScript is a script of nodecoap/ that needs the npm module mod,
// failing t when node or the module is missing.
func nodeScript(t testing.TB, mod, name string) (node, script string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Debian nodejs) is needed: %v; run scripts/test-deps.sh", err)
	}
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "nodecoap")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", mod, "package.json")); err != nil {
		t.Fatalf("npm %s is not installed in %s (%v); run scripts/test-deps.sh", mod, dir, err)
	}
	return node, filepath.Join(dir, name)
}

// NodeCoap sends one request with node-coap and returns the response as
// it decoded it. A failure of the client (a timeout, an error it
// reports) fails t.
func NodeCoap(ctx context.Context, t testing.TB, req NodeCoapRequest) NodeCoapResponse {
	t.Helper()
	node, script := nodeCoapScript(t)
	spec, err := req.spec()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, node, script, string(spec))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var resp NodeCoapResponse
	if jerr := json.Unmarshal(out, &resp); jerr != nil || err != nil || resp.Error != "" {
		t.Fatalf("node-coap %s: %v %s\nstdout: %s\nstderr: %s", spec, err, resp.Error, out, stderr.String())
	}
	return resp
}

// NodeCoapObservers is one node-coap process holding several Observe
// registrations.
type NodeCoapObservers struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan NodeCoapResponse
	done   chan error // the process's exit, once
	mu     sync.Mutex
	stderr strings.Builder // guarded by mu
}

// StartNodeCoapObservers starts req.Observe observers of one resource.
// Stop deregisters them; the test's end kills the process if Stop was not
// called.
func StartNodeCoapObservers(ctx context.Context, t testing.TB, req NodeCoapRequest) *NodeCoapObservers {
	t.Helper()
	node, script := nodeCoapScript(t)
	spec, err := req.spec()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	o := &NodeCoapObservers{lines: make(chan NodeCoapResponse, 1024), done: make(chan error, 1)}
	o.cmd = exec.CommandContext(ctx, node, script, string(spec))
	o.cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.stderr.Write(p)
	})
	if o.stdin, err = o.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := o.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := o.cmd.Start(); err != nil {
		t.Fatalf("node-coap: %v", err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(o.lines)
		s := bufio.NewScanner(stdout)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			var r NodeCoapResponse
			if err := json.Unmarshal(s.Bytes(), &r); err != nil {
				r.Error = fmt.Sprintf("unreadable line %q: %v", s.Text(), err)
			}
			o.lines <- r
		}
	}()
	go func() {
		<-read // Wait closes stdout: read it all first
		o.done <- o.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		for range o.lines {
		}
	})
	return o
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Next returns the next response or notification, failing t after wait or
// when the client reports an error or ends.
func (o *NodeCoapObservers) Next(t testing.TB, wait time.Duration) NodeCoapResponse {
	t.Helper()
	select {
	case r, ok := <-o.lines:
		if !ok {
			t.Fatalf("node-coap observers ended early\nstderr: %s", o.Stderr())
		}
		if r.Error != "" {
			t.Fatalf("node-coap observers: %s\nstderr: %s", r.Error, o.Stderr())
		}
		return r
	case <-time.After(wait):
		t.Fatalf("node-coap observers: nothing in %v\nstderr: %s", wait, o.Stderr())
	}
	return NodeCoapResponse{}
}

// Stop makes every observer deregister (a GET with Observe 1, RFC 7641
// §3.6) and waits for the process to end. It returns what arrived in the
// meantime.
func (o *NodeCoapObservers) Stop(t testing.TB, wait time.Duration) []NodeCoapResponse {
	t.Helper()
	o.stdin.Close()
	var late []NodeCoapResponse
	deadline := time.After(wait)
	for {
		select {
		case r, ok := <-o.lines:
			if !ok {
				if err := <-o.done; err != nil {
					t.Fatalf("node-coap observers: %v\nstderr: %s", err, o.Stderr())
				}
				t.Fatalf("node-coap observers ended without deregistering\nstderr: %s", o.Stderr())
			}
			if r.Error != "" {
				t.Fatalf("node-coap observers: %s\nstderr: %s", r.Error, o.Stderr())
			}
			if r.Closed {
				if err := <-o.done; err != nil {
					t.Fatalf("node-coap observers: %v\nstderr: %s", err, o.Stderr())
				}
				return late
			}
			late = append(late, r)
		case <-deadline:
			t.Fatalf("node-coap observers did not deregister in %v\nstderr: %s", wait, o.Stderr())
		}
	}
}

// Stderr is what the process wrote to stderr so far.
func (o *NodeCoapObservers) Stderr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stderr.String()
}
