package bridge

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
)

const testOriginIdle = 5 * time.Minute

// idleOrigin is a coap+tcp origin, the pool in front of it on a fake
// clock, and the Upstream for it the proxy would use.
func idleOrigin(t *testing.T) (*observableOrigin, *stream.Server, *clocktest.Fake, *streamOrigins, *streamUpstream) {
	t.Helper()
	origin := &observableOrigin{}
	addr, srv := startStreamOrigin(t, origin, false)
	clk := clocktest.New(time.Now())
	so := newStreamOrigins(stream.Config{}, testOriginIdle, clk)
	t.Cleanup(func() { so.Close() })
	u, err := coap.ParseURI(fmt.Sprintf("coap+tcp://%v/obs", addr))
	if err != nil {
		t.Fatal(err)
	}
	return origin, srv, clk, so, so.upstream(u, addr, nil)
}

func roundTrip(t *testing.T, u *streamUpstream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := u.RoundTrip(ctx, u.k.addr, &coap.Message{Code: coap.GET})
	if err != nil || resp.Code != coap.Content {
		t.Fatalf("exchange: %v, %v", resp, err)
	}
}

// originConns waits for the origin to count n connections open: it sees
// a close only once its reader has.
func originConns(t *testing.T, srv *stream.Server, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d connections open at the origin", n), func() bool { return srv.Stats().Conns == n },
		func() string { return fmt.Sprintf("%+v", srv.Stats()) })
}

// A pooled origin connection with no exchange for origin_idle is closed
// (the origin sees it end), each exchange starting the wait afresh; the
// next request opens a new one.
func TestIdleOriginConnectionIsClosedAndReopened(t *testing.T) {
	_, srv, clk, so, u := idleOrigin(t)
	roundTrip(t, u)
	originConns(t, srv, 1)
	if got := clk.Pending(); !slices.Equal(got, []time.Duration{testOriginIdle}) {
		t.Fatalf("timers pending after an exchange: %v, want the idle one", got)
	}
	clk.Advance(testOriginIdle - time.Second)
	roundTrip(t, u) // in time: the connection is used, and stays
	clk.Advance(testOriginIdle - time.Second)
	if so.pool.idleCloses() != 0 || srv.Stats().Accepted != 1 {
		t.Fatalf("closed while in use: %d idle closes, %d connections accepted", so.pool.idleCloses(), srv.Stats().Accepted)
	}
	clk.Advance(time.Second)
	originConns(t, srv, 0)
	if n := so.pool.idleCloses(); n != 1 {
		t.Fatalf("%d idle closes", n)
	}
	if n := so.pool.len(); n != 0 {
		t.Fatalf("%d origins still pooled", n)
	}
	roundTrip(t, u)
	originConns(t, srv, 1)
	if n := srv.Stats().Accepted; n != 2 {
		t.Fatalf("%d connections accepted, want a second one", n)
	}
}

// An active observation keeps its connection open however long no
// exchange is made; once it is cancelled the connection idles out.
func TestObservedOriginConnectionStaysOpen(t *testing.T) {
	origin, srv, clk, so, u := idleOrigin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	notes := make(chan *coap.Message, 4)
	resp, stop, err := u.Observe(ctx, u.k.addr, &coap.Message{Code: coap.GET}, func(m *coap.Message) { notes <- m.Clone() })
	if err != nil || stop == nil || !resp.Options.Has(coap.Observe) {
		t.Fatalf("observe: %v, %v, %v", resp, stop != nil, err)
	}
	if got := clk.Pending(); len(got) != 0 {
		t.Fatalf("an idle timer runs while observed: %v", got)
	}
	clk.Advance(10 * testOriginIdle)
	origin.notify()
	select {
	case m := <-notes:
		if string(m.Payload) != "v001;" {
			t.Fatalf("notification %q", m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("no notification: the observed connection closed")
	}
	if n := so.pool.idleCloses(); n != 0 || srv.Stats().Conns != 1 {
		t.Fatalf("observed connection: %d idle closes, %d open at the origin", n, srv.Stats().Conns)
	}
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(testOriginIdle)
	originConns(t, srv, 0)
	if n := so.pool.idleCloses(); n != 1 {
		t.Fatalf("%d idle closes after the observation ended", n)
	}
}

// origin_idle 0 keeps connections for ever, as before there was one.
func TestOriginIdleZeroNeverCloses(t *testing.T) {
	origin := &observableOrigin{}
	addr, srv := startStreamOrigin(t, origin, false)
	clk := clocktest.New(time.Now())
	so := newStreamOrigins(stream.Config{}, 0, clk)
	defer so.Close()
	u, err := coap.ParseURI(fmt.Sprintf("coap+tcp://%v/obs", addr))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, so.upstream(u, addr, nil))
	if got := clk.Pending(); len(got) != 0 {
		t.Fatalf("timers pending with origin_idle 0: %v", got)
	}
	originConns(t, srv, 1)
}

func TestOriginIdleConfig(t *testing.T) {
	if d := Defaults().Proxy.OriginIdle.Duration; d != 5*time.Minute {
		t.Fatalf("default origin_idle %v", d)
	}
	for _, tc := range []struct {
		v  string
		ok bool
	}{{"0s", true}, {"1s", true}, {"1h", true}, {"500ms", false}, {"-1s", false}} {
		_, err := Parse("t.toml", []byte(fmt.Sprintf("[proxy]\norigin_idle = %q\n", tc.v)))
		if (err == nil) != tc.ok {
			t.Errorf("origin_idle = %q: %v", tc.v, err)
		}
	}
	p := startProxy(t, func(c *Config) { c.Proxy.OriginIdle = Duration{time.Hour} })
	check := func(want time.Duration) {
		t.Helper()
		for name, pl := range map[string]*pool{"stream": p.streamUp.pool, "dtls": p.dtlsUp.pool} {
			pl.mu.Lock()
			idle := pl.idle
			pl.mu.Unlock()
			if idle != want {
				t.Errorf("%s origins: idle %v, want %v", name, idle, want)
			}
		}
	}
	check(time.Hour)
	// A reload changes it without a restart.
	path := writeTemp(t, "g.toml", fmt.Sprintf("[proxy]\nlisten = [%q]\norigin_idle = \"2m\"\n", p.cfg.Proxy.Listen[0]))
	if _, err := p.ReloadFile(path); err != nil {
		t.Fatal(err)
	}
	check(2 * time.Minute)
}
