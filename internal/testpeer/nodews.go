package testpeer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// NodeWSOriginSpec is what the ws origin (nodecoap/ws-origin.js) does.
type NodeWSOriginSpec struct {
	// Payload starts each 2.05's payload; the request's Uri-Path follows
	// after a space and a "/".
	Payload string `json:"payload,omitempty"`
	// Ping makes it send a Ping once the CSMs are exchanged.
	Ping bool `json:"ping,omitempty"`
}

// NodeWSEvent is one line of the origin's report: a connection, a
// message it received (decoded by its own parser), the Pong to its Ping,
// a close.
type NodeWSEvent struct {
	Event string `json:"event"`
	Port  int    `json:"port"`
	// connection
	Path      string `json:"path"`
	Protocols string `json:"protocols"` // the client's Sec-WebSocket-Protocol
	Selected  string `json:"selected"`  // the subprotocol agreed
	// message
	Seq     int      `json:"seq"`
	Binary  bool     `json:"binary"`
	Hex     string   `json:"hex"`
	Code    string   `json:"code"`
	Token   string   `json:"token"`
	Options [][2]any `json:"options"` // number, hex value
	Payload string   `json:"payload"` // hex
	// close
	CloseCode int    `json:"closeCode"`
	Reason    string `json:"reason"`
	// what went wrong: an error of the origin, or a message it could not
	// parse
	Error string `json:"error"`
}

// NodeWSOrigin is a CoAP-over-WebSockets origin (RFC 8323 §4) in node
// on the npm ws package, listening on 127.0.0.1:Port at
// /.well-known/coap.
type NodeWSOrigin struct {
	Port    int
	mu      sync.Mutex
	events  []NodeWSEvent // guarded by mu
	changed chan struct{} // guarded by mu: closed and replaced on each event
	ended   bool          // guarded by mu
	stderr  strings.Builder
}

// StartNodeWSOrigin starts the origin and waits until it listens. The
// test's end stops it.
func StartNodeWSOrigin(ctx context.Context, t testing.TB, spec NodeWSOriginSpec) *NodeWSOrigin {
	t.Helper()
	node, script := nodeScript(t, "ws", "ws-origin.js")
	arg, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	o := &NodeWSOrigin{changed: make(chan struct{})}
	cmd := exec.CommandContext(ctx, node, script, string(arg))
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.stderr.Write(p)
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("ws origin: %v", err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		s := bufio.NewScanner(stdout)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			var e NodeWSEvent
			if err := json.Unmarshal(s.Bytes(), &e); err != nil {
				e = NodeWSEvent{Event: "error", Error: fmt.Sprintf("unreadable line %q: %v", s.Text(), err)}
			}
			o.add(e, false)
		}
		o.add(NodeWSEvent{}, true)
	}()
	t.Cleanup(func() {
		stdin.Close() // it exits when stdin closes
		select {
		case <-read:
		case <-time.After(10 * time.Second):
			cancel()
			<-read
		}
		cancel()
		cmd.Wait()
	})
	evs := o.Wait(t, 20*time.Second, "listening", func(evs []NodeWSEvent) bool {
		return len(evs) > 0 && evs[0].Event == "listening"
	})
	o.Port = evs[0].Port
	return o
}

func (o *NodeWSOrigin) add(e NodeWSEvent, end bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if end {
		o.ended = true
	} else {
		o.events = append(o.events, e)
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// Wait returns the events so far once done holds for them, failing t
// after wait, when the origin reports an error or when it ends first.
func (o *NodeWSOrigin) Wait(t testing.TB, wait time.Duration, what string, done func([]NodeWSEvent) bool) []NodeWSEvent {
	t.Helper()
	deadline := time.After(wait)
	for {
		o.mu.Lock()
		evs, changed, ended := append([]NodeWSEvent(nil), o.events...), o.changed, o.ended
		stderr := o.stderr.String()
		o.mu.Unlock()
		for _, e := range evs {
			if e.Error != "" {
				t.Fatalf("ws origin: %s: %s\nevents: %+v\nstderr: %s", e.Event, e.Error, evs, stderr)
			}
		}
		if done(evs) {
			return evs
		}
		if ended {
			t.Fatalf("ws origin ended before %s\nevents: %+v\nstderr: %s", what, evs, stderr)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("ws origin: no %s in %v\nevents: %+v\nstderr: %s", what, wait, evs, stderr)
		}
	}
}
