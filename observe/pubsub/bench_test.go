package pubsub

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// countingUpstream is the cheapest Upstream: the hub's own fan-out is
// measured in package observe.
type countingUpstream struct{}

func (u *countingUpstream) Notify(*coap.Message)                {}
func (u *countingUpstream) Started(func(context.Context) error) {}

type discard struct{}

func (discard) WriteResponse(*coap.Message) error { return nil }

// BenchmarkPublishToSubscribers: one PUT through the stage, stored and
// handed to N subscriptions. "mem" leaves the disk out; "disk" includes
// the fsyncs that make the acknowledgement durable.
func BenchmarkPublishToSubscribers(b *testing.B) {
	for _, storage := range []string{"mem", "disk"} {
		for _, n := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("%s/subscribers=%d", storage, n), func(b *testing.B) {
				var opts []Option
				if storage == "mem" {
					opts = append(opts, withStore(memStore{}))
				}
				r := newRig(b, nil, opts...)
				_, dp := r.create(sensor("bench"))
				r.publish(dp, 60, []byte{0x80})
				for range n {
					r.subscribe(dp, &countingUpstream{})
				}
				payload := make([]byte, 64)
				m := msg(coap.PUT, dp, payload, coap.ContentFormat, 60)
				req := &coap.Request{Msg: m, Peer: netip.MustParseAddrPort("[2001:db8::1]:5683")}
				stage := r.stage
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := stage.ServeCoAP(context.Background(), discard{}, req); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if got := r.b.Stats().SubscribersInformed; got < uint64(b.N*n) {
					b.Fatalf("informed %d, want %d", got, b.N*n)
				}
				b.ReportMetric(float64(n), "notifies/op")
			})
		}
	}
}
