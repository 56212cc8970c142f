package spinel

import (
	"context"
	"errors"
	"github.com/opaque-edge/gatewayd/internal/testutil"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial"
)

// pipePort is a serial.Port for session tests: each Write comes out of out,
// and what is put into in is read.
type pipePort struct {
	serial.Port // nil; a session calls only the methods below
	in, out     chan []byte
	closed      chan struct{}
	once        sync.Once
}

var errPortClosed = errors.New("pipePort: closed")

func newPipePort() *pipePort {
	return &pipePort{in: make(chan []byte), out: make(chan []byte, 4), closed: make(chan struct{})}
}

func (p *pipePort) Read(b []byte) (int, error) {
	select {
	case in := <-p.in:
		return copy(b, in), nil
	case <-p.closed:
		return 0, errPortClosed
	}
}

func (p *pipePort) Write(b []byte) (int, error) {
	select {
	case p.out <- slices.Clone(b):
		return len(b), nil
	case <-p.closed:
		return 0, errPortClosed
	}
}

func (p *pipePort) ResetOutputBuffer() error { return nil }

func (p *pipePort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// command returns the next Spinel frame the host wrote.
func (p *pipePort) command(t *testing.T) Frame {
	t.Helper()
	select {
	case b := <-p.out:
		var frames [][]byte
		NewDecoder(0).Feed(b, func(f []byte) { frames = append(frames, slices.Clone(f)) })
		if len(frames) != 1 {
			t.Fatalf("write %x holds %d frames", b, len(frames))
		}
		f, err := ParseFrame(frames[0])
		if err != nil {
			t.Fatal(err)
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no command written")
		return Frame{}
	}
}

// reply sends the RCP's PROP_VALUE_IS with tid.
func (p *pipePort) reply(t *testing.T, tid uint8, prop uint32, value string) {
	t.Helper()
	raw, err := Frame{Header: MakeHeader(0, tid), Cmd: CmdPropValueIs, Prop: prop, Value: []byte(value)}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p.in <- AppendHDLC(nil, raw):
	case <-time.After(5 * time.Second):
		t.Fatal("reply not read")
	}
}

// fakeClock stands in for time.AfterFunc. Its timers fire only when the
// test says so, and firing is split in two, as it is for a real timer: once
// a timer has fired its Stop reports false, and its function runs later (on
// a real timer, in its own goroutine, which may wait for a lock).
type fakeClock struct {
	mu     sync.Mutex
	timers []*fakeTimer // guarded by mu
}

type fakeTimer struct {
	f             func()
	fired, halted bool
}

func (c *fakeClock) afterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{f: f}
	c.timers = append(c.timers, tm)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if tm.fired || tm.halted {
			return false
		}
		tm.halted = true
		return true
	}
}

// fire makes the i-th timer fire and returns its function, not yet run.
func (c *fakeClock) fire(t *testing.T, i int) func() {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if i >= len(c.timers) || c.timers[i].halted {
		t.Fatalf("timer %d of %d not armed", i, len(c.timers))
	}
	c.timers[i].fired = true
	return c.timers[i].f
}

// newTestSession runs a session on a pipePort with one TID free, so that
// every call uses that TID again.
func newTestSession(t *testing.T) (*session, *pipePort, *fakeClock) {
	d := &Driver{
		cfg:  Config{Device: "pipe"}.WithDefaults(),
		log:  slog.New(slog.DiscardHandler),
		done: make(chan struct{}),
	}
	p := newPipePort()
	s := newSession(d, p)
	clk := &fakeClock{}
	s.afterFunc = clk.afterFunc
	for len(s.tids) > 1 {
		<-s.tids
	}
	go s.readLoop()
	go s.writeLoop()
	t.Cleanup(s.close)
	return s, p, clk
}

type result struct {
	f   Frame
	err error
}

func goCall(s *session, ctx context.Context, prop uint32, timeout time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		f, err := s.call(ctx, CmdPropValueGet, prop, nil, timeout, nil)
		ch <- result{f, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return")
		return result{}
	}
}

// A caller gave up on its command and the TID's orphan timer fired just as
// the late reply came, too late to be stopped. When its function runs, the
// TID belongs to a later command: the timer must leave that command alone,
// neither fail the session under it nor free its TID while its reply is
// still to come (the reply would then be taken for a third command's).
func TestStaleOrphanTimerLeavesLaterUseOfTIDAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		giveUp bool // the later caller gives up too, orphaning the TID again
	}{
		{"later command waiting", false},
		{"later command orphaned", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p, clk := newTestSession(t)
			ctx1, cancel1 := context.WithCancel(context.Background())
			res1 := goCall(s, ctx1, PropNCPVersion, time.Minute)
			tid := p.command(t).Header.TID()
			cancel1()
			if r := await(t, res1); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("first call = %v, want context.Canceled", r.err)
			}
			stale := clk.fire(t, 0)
			p.reply(t, tid, PropNCPVersion, "late")

			ctx2, cancel2 := context.WithCancel(context.Background())
			defer cancel2()
			res2 := goCall(s, ctx2, PropHWAddr, time.Minute)
			if got := p.command(t).Header.TID(); got != tid {
				t.Fatalf("second command has TID %d, want %d again", got, tid)
			}
			if tc.giveUp {
				cancel2()
				if r := await(t, res2); !errors.Is(r.err, context.Canceled) {
					t.Fatalf("second call = %v, want context.Canceled", r.err)
				}
			}

			stale()

			if err := s.cause(); err != nil {
				t.Errorf("the stale timer failed the session: %v", err)
			}
			if tc.giveUp && len(s.tids) != 0 {
				t.Error("the stale timer freed the TID while the later command's reply is still to come")
			}
			if t.Failed() {
				return
			}
			if tc.giveUp {
				p.reply(t, tid, PropHWAddr, "late too")
				testutil.Eventually(t, "the reply frees the TID", func() bool { return len(s.tids) == 1 })
			} else {
				p.reply(t, tid, PropHWAddr, "second")
				if r := await(t, res2); r.err != nil || r.f.Prop != PropHWAddr || string(r.f.Value) != "second" {
					t.Fatalf("second call = %+v, %v", r.f, r.err)
				}
			}
			want := uint64(1)
			if tc.giveUp {
				want = 2
			}
			if got := s.d.lateReplies.Load(); got != want {
				t.Errorf("late replies %d, want %d", got, want)
			}
		})
	}
}

// A command that times out fails the session; its TID must not go back to
// the pool on the way, where a concurrent caller could take it and be
// handed the timed-out command's late reply as its own.
func TestTimedOutTIDIsNotHandedOutAgain(t *testing.T) {
	s, p, _ := newTestSession(t)
	res := goCall(s, context.Background(), PropNCPVersion, 50*time.Millisecond)
	tid := p.command(t).Header.TID()
	if r := await(t, res); !errors.Is(r.err, ErrTimeout) {
		t.Fatalf("call = %v, want ErrTimeout", r.err)
	}
	if n := len(s.tids); n != 0 {
		t.Fatalf("TID %d is free again in a failed session", tid)
	}
	if r := await(t, goCall(s, context.Background(), PropHWAddr, time.Minute)); r.err == nil {
		t.Fatalf("a call after the timeout got %+v", r.f)
	}
}

// An orphaned TID whose reply never comes is freed by its timer, which
// fails the session with an error that says so, so the link is reset.
func TestOrphanedTIDWithoutReplyFailsSession(t *testing.T) {
	s, p, clk := newTestSession(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := goCall(s, ctx, PropNCPVersion, time.Second)
	p.command(t)
	cancel()
	await(t, res)
	clk.fire(t, 0)()
	if err := s.cause(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "after its caller gave up") {
		t.Fatalf("session cause %v, want a timeout of the orphaned TID", err)
	}
}
