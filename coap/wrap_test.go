package coap

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
)

// baseWriter is a writer with the capabilities a test asks for.
type baseWriter struct {
	got    []*Message
	modes  []string
	ended  []error
	notes  int
	acked  bool
	code   Code
	report bool
}

func (b *baseWriter) WriteResponse(m *Message) error {
	b.got, b.modes = append(b.got, m), append(b.modes, "response")
	return nil
}

type (
	plainBase  struct{ *baseWriter }
	notifyBase struct{ *baseWriter }
	promptBase struct{ *baseWriter }
	bothBase   struct{ *baseWriter }
	ownBase    struct{ *baseWriter }
)

func (b *baseWriter) notify(*Message, bool, func(error)) error { b.notes++; return nil }
func (b *baseWriter) prompt(m *Message) error {
	if b.acked {
		return ErrSeparate
	}
	b.got, b.modes = append(b.got, m), append(b.modes, "prompt")
	return nil
}

func (n notifyBase) Notify(m *Message, con bool, done func(error)) error {
	return n.notify(m, con, done)
}
func (n notifyBase) Peer() netip.AddrPort                              { return netip.MustParseAddrPort("192.0.2.1:5683") }
func (n notifyBase) Token() []byte                                     { return []byte{7} }
func (p promptBase) WritePrompt(m *Message) error                      { return p.prompt(m) }
func (b bothBase) Notify(m *Message, con bool, done func(error)) error { return b.notify(m, con, done) }
func (b bothBase) Peer() netip.AddrPort                                { return netip.MustParseAddrPort("192.0.2.1:5683") }
func (b bothBase) Token() []byte                                       { return []byte{7} }
func (b bothBase) WritePrompt(m *Message) error                        { return b.prompt(m) }
func (o ownBase) WriteOwned(m *Message) error {
	o.got, o.modes = append(o.got, m), append(o.modes, "owned")
	return nil
}
func (o ownBase) Finish(err error) { o.ended = append(o.ended, err) }
func (o ownBase) Code() Code       { return o.code }

// must is w with capability T, failing t if it has not.
func must[T any](t *testing.T, w ResponseWriter) T {
	t.Helper()
	c, ok := w.(T)
	if !ok {
		t.Fatalf("%T has not the capability asked for", w)
	}
	return c
}

// tagging is a Wrapper that marks every response it passes on.
type tagging struct{ PassFinish }

func (tagging) Write(next Next, resp *Message) error {
	out := *resp
	out.Payload = append([]byte("tagged:"), resp.Payload...)
	return next.Write(&out)
}

// A wrapped writer has exactly the capabilities later stages look for
// that the writer it wraps has (NotifyWriter, PromptWriter), and is
// always a Finisher, OwnedWriter and CodeReporter.
func TestWrapWriterKeepsTheCapabilitiesOfTheWriterItWraps(t *testing.T) {
	for _, tc := range []struct {
		name           string
		w              ResponseWriter
		notify, prompt bool
	}{
		{"plain", plainBase{&baseWriter{}}, false, false},
		{"notify", notifyBase{&baseWriter{}}, true, false},
		{"prompt", promptBase{&baseWriter{}}, false, true},
		{"notify and prompt", bothBase{&baseWriter{}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			with, x := WrapWriterWith[tagging](tc.w)
			if got, ok := WrapperOf[*tagging](with); !ok || got != x {
				t.Fatalf("WrapWriterWith: WrapperOf found %v %v, want the Wrapper it returned", got, ok)
			}
			for depth, w := range []ResponseWriter{WrapWriter(tc.w, tagging{}), WrapWriter(WrapWriter(tc.w, tagging{}), tagging{}), with} {
				_, notify := w.(NotifyWriter)
				_, prompt := w.(PromptWriter)
				if notify != tc.notify || prompt != tc.prompt {
					t.Fatalf("depth %d: notify %v prompt %v, want %v %v", depth+1, notify, prompt, tc.notify, tc.prompt)
				}
				if _, ok := w.(Finisher); !ok {
					t.Fatalf("depth %d: not a Finisher", depth+1)
				}
				if _, ok := w.(OwnedWriter); !ok {
					t.Fatalf("depth %d: not an OwnedWriter", depth+1)
				}
				if _, ok := w.(CodeReporter); !ok {
					t.Fatalf("depth %d: not a CodeReporter", depth+1)
				}
				if unwrap(w) != tc.w {
					t.Fatalf("depth %d: unwrap found %T", depth+1, unwrap(w))
				}
			}
		})
	}
}

// Every way of writing goes through the Wrapper, and on to the wrapped
// writer the way the caller wrote: prompt as prompt, owned as owned.
func TestWrappedWritesGoThroughTheWrapperTheWayTheyCame(t *testing.T) {
	b := &baseWriter{}
	w := WrapWriter(bothBase{b}, tagging{})
	if err := w.WriteResponse(&Message{Code: Content, Payload: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if err := must[PromptWriter](t, w).WritePrompt(&Message{Code: Content, Payload: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	b.acked = true
	if err := WritePrompt(w, &Message{Code: Content, Payload: []byte("c")}); !errors.Is(err, ErrSeparate) {
		t.Fatalf("prompt after the ACK: %v, want ErrSeparate from the wrapped writer", err)
	}
	if err := must[NotifyWriter](t, w).Notify(&Message{Code: Content}, false, nil); err != nil || b.notes != 1 {
		t.Fatalf("notify: %v, %d reached the wrapped writer", err, b.notes)
	}
	if len(b.got) != 2 || string(b.got[0].Payload) != "tagged:a" || string(b.got[1].Payload) != "tagged:b" || b.modes[1] != "prompt" {
		t.Fatalf("wrapped writer got %v as %v", b.got, b.modes)
	}

	o := &baseWriter{code: Valid}
	ow := WrapWriter(ownBase{o}, tagging{})
	if err := WriteOwned(ow, &Message{Code: Content, Payload: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	Finish(ow, ErrTimeout)
	if len(o.got) != 1 || o.modes[0] != "owned" || string(o.got[0].Payload) != "tagged:d" || len(o.ended) != 1 || o.ended[0] != ErrTimeout {
		t.Fatalf("owned: %v as %v, ended %v", o.got, o.modes, o.ended)
	}
	if c := must[CodeReporter](t, ow).Code(); c != Valid {
		t.Fatalf("code %v, want the wrapped writer's own report, 2.03", c)
	}
	// A wrapped writer that does not report its code: the wrapper tells
	// the code of the first response it wrote through.
	if c := must[CodeReporter](t, w).Code(); c != Content {
		t.Fatalf("code %v, want 2.05", c)
	}
}

// capturing keeps the response instead of writing it; finish records.
type capturing struct {
	kept  *Message
	owned bool
	ended error
}

func (c *capturing) Write(next Next, resp *Message) error {
	c.kept, c.owned = resp, next.Owned()
	return nil
}
func (c *capturing) Finish(_ Next, err error) { c.ended = err }

// A stage finds the Wrapper an earlier stage put in front of the writer,
// through any wrappers between.
func TestWrapperOfFindsAnEarlierStagesWrapper(t *testing.T) {
	c := &capturing{}
	w := WrapWriter(WrapWriter(plainBase{&baseWriter{}}, c), tagging{})
	got, ok := WrapperOf[*capturing](w)
	if !ok || got != c {
		t.Fatalf("WrapperOf = %v %v, want the capture", got, ok)
	}
	if _, ok := WrapperOf[*capturing](plainBase{&baseWriter{}}); ok {
		t.Fatal("found a wrapper in front of a writer nothing wraps")
	}
	// The capture kept the tagged response, handed over.
	WriteOwned(w, &Message{Code: Content, Payload: []byte("x")})
	if c.kept == nil || string(c.kept.Payload) != "tagged:x" || !c.owned {
		t.Fatalf("capture kept %v (owned %v)", c.kept, c.owned)
	}
	Finish(w, ErrReset)
	if c.ended != ErrReset {
		t.Fatalf("capture's Finish got %v", c.ended)
	}
}

// batchTransport counts what the endpoint sends it, one by one and in
// batches; reads block until Close.
type batchTransport struct {
	closed  chan struct{}
	once    sync.Once
	mu      sync.Mutex
	singles int // guarded by mu
	batches int // guarded by mu
	inBatch int // guarded by mu
}

func (b *batchTransport) ReadFrom([]byte) (int, netip.AddrPort, error) {
	<-b.closed
	return 0, netip.AddrPort{}, ErrClosed
}
func (b *batchTransport) WriteTo(context.Context, []byte, netip.AddrPort) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.singles++
	return nil
}
func (b *batchTransport) WriteBatch(_ context.Context, ds []Datagram) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches++
	b.inBatch += len(ds)
	return len(ds), nil
}
func (b *batchTransport) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

// Notifications pass wrappers unchanged, so NotifyAll still sends those
// to wrapped endpoint writers in one batch.
func TestNotifyAllBatchesThroughWrappers(t *testing.T) {
	bt := &batchTransport{closed: make(chan struct{})}
	e := NewEndpoint(bt, EndpointConfig{})
	defer e.Close()
	const n = 20
	ns := make([]Notification, n)
	for i := range ns {
		rw := &responseWriter{e: e, peer: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(1000+i)), tokLen: 1}
		ns[i] = Notification{W: must[NotifyWriter](t, WrapWriter(rw, tagging{})), Resp: &Message{Code: Content}}
	}
	NotifyAll(ns)
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.batches != 1 || bt.inBatch != n || bt.singles != 0 {
		t.Fatalf("%d batches of %d datagrams, %d sent alone; want 1 batch of %d", bt.batches, bt.inBatch, bt.singles, n)
	}
}
