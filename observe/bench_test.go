package observe

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// BenchmarkFanout10k registers 10,000 observers on loopback (Go clients,
// many observations per socket) behind one upstream observation, then
// times one upstream notification until the last observer has it.
//
//	go test -run '^$' -bench Fanout10k -benchtime 5x ./observe/
//
// At most 200 rounds: message IDs are per peer (RFC 7252 §4.4), and a
// client socket here holds a few hundred observations, so after some 250
// rounds it would see an ID again within EXCHANGE_LIFETIME and its
// deduplication would drop the notification.
//
// Reported: ms/notify (upstream notification to delivery at the last
// observer) and B/observer (heap growth per observer: hub, proxy
// endpoint and the Go clients' own observations together).
func BenchmarkFanout10k(b *testing.B) {
	const (
		observers = 10000
		sockets   = 40
	)
	cfg := Defaults()
	cfg.MaxObservers, cfg.MaxPerClient = observers, observers
	r := newRig(b, cfg, coap.Params{})
	clients := make([]*coap.Endpoint, sockets)
	for i := range clients {
		clients[i], _ = endpoint(b, "127.0.0.1:0", coap.EndpointConfig{})
	}
	var (
		want    atomic.Value // payload of the current round
		got     atomic.Int64
		allDone = make(chan struct{}, 1)
	)
	want.Store("")
	notify := func(m *coap.Message) {
		if string(m.Payload) == want.Load().(string) && got.Add(1) == observers {
			allDone <- struct{}{}
		}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Int64
	for i := range observers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, obs, err := clients[i%sockets].Observe(ctx, r.proxy, get("temp"), notify)
			if err != nil || obs == nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d registrations failed", n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perObserver := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / observers
	if s := r.hub.Stats(); s.Observers != observers || r.origin.registrations() != 1 {
		b.Fatalf("stats %+v, origin registrations %d", s, r.origin.registrations())
	}
	if b.N > 200 {
		b.Fatalf("at most 200 rounds: a client socket's message IDs wrap after that")
	}
	var worst time.Duration
	b.ResetTimer()
	for i := range b.N {
		p := fmt.Sprintf("n%d", i)
		want.Store(p)
		got.Store(0)
		start := time.Now()
		r.origin.push(b, content(p, uint32(i+2)), false)
		select {
		case <-allDone:
		case <-time.After(30 * time.Second):
			b.Fatalf("round %d: %d of %d delivered", i, got.Load(), observers)
		}
		if d := time.Since(start); d > worst {
			worst = d
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/notify")
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
	b.ReportMetric(perObserver, "B/observer")
	b.ReportMetric(0, "ns/op")
}
