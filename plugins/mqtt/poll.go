package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// PollObserve makes an ObserveFunc out of a DoFunc, for hosts that offer
// no observation across the plugin boundary: it GETs the URI again when
// the last representation's Max-Age runs out (clamped to [minEvery,
// maxEvery]) and passes fn each representation that differs from the
// previous one (payload, content format or ETag). Behind gatewayd's cache
// and Observe hub such GETs are answered locally while the representation
// is fresh, so the radio carries no more than with a real observation.
func PollObserve(do DoFunc, minEvery, maxEvery time.Duration) ObserveFunc {
	if minEvery <= 0 {
		minEvery = time.Second
	}
	if maxEvery < minEvery {
		maxEvery = minEvery
	}
	return func(ctx context.Context, uri string, fn func(*coap.Message)) (func(), error) {
		if err := checkCoAPURI(uri); err != nil {
			return nil, err
		}
		get := func(ctx context.Context) (*coap.Message, error) {
			req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
			req.Options = req.Options.Insert(coap.ProxyURI, []byte(uri))
			return do(ctx, req, false)
		}
		first, err := get(ctx)
		if err != nil {
			return nil, err
		}
		if first == nil {
			return nil, fmt.Errorf("mqtt: observe %s: no response", uri)
		}
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		fn(first)
		wg.Go(func() {
			last := first
			for {
				wait := maxEvery
				if v, ok := last.Options.Uint(coap.MaxAge); ok {
					wait = min(max(time.Duration(v)*time.Second, minEvery), maxEvery)
				}
				t := time.NewTimer(wait)
				select {
				case <-pctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				resp, err := get(pctx)
				if err != nil || resp == nil {
					continue
				}
				if !same(last, resp) {
					fn(resp)
				}
				last = resp
			}
		})
		return func() { cancel(); wg.Wait() }, nil
	}
}

func same(a, b *coap.Message) bool {
	if a.Code != b.Code || !bytes.Equal(a.Payload, b.Payload) {
		return false
	}
	for _, id := range []coap.OptionID{coap.ContentFormat, coap.ETag} {
		av, aok := a.Options.Get(id)
		bv, bok := b.Options.Get(id)
		if aok != bok || !bytes.Equal(av, bv) {
			return false
		}
	}
	return true
}
