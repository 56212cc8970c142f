// Package demo is a small CoAP origin server for the built-in demo and for
// tests: a temperature that changes, a valve that can be set, and
// /.well-known/core.
package demo

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// Origin serves /sensors/temp (GET), /actuators/valve (GET, PUT),
// /echo (any method: echoes options' Content-Format and the payload) and
// /.well-known/core.
type Origin struct {
	start time.Time
	// Requests counts every request served, for tests that need to know
	// whether the origin was contacted.
	Requests atomic.Int64

	mu    sync.Mutex
	valve string // guarded by mu
}

// NewOrigin returns an origin with the valve closed.
func NewOrigin() *Origin { return &Origin{start: time.Now(), valve: "closed"} }

// ServeCoAP implements coap.Handler.
func (o *Origin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.Requests.Add(1)
	var path string
	for v := range r.Msg.Options.All(coap.URIPath) {
		path += "/" + string(v)
	}
	resp := &coap.Message{Code: coap.Content}
	text := func(s string) {
		resp.Options = resp.Options.SetUint(coap.ContentFormat, 0)
		resp.Payload = []byte(s)
	}
	switch path {
	case "/.well-known/core":
		if r.Msg.Code != coap.GET {
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
		resp.Options = resp.Options.SetUint(coap.ContentFormat, 40)
		resp.Payload = []byte(`</sensors/temp>;rt="temperature";obs,</actuators/valve>;rt="valve",</echo>`)
	case "/sensors/temp":
		if r.Msg.Code != coap.GET {
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
		// A slow sine-free walk: 21.0 °C plus a tenth per 5 s, wrapping.
		tenths := int(time.Since(o.start)/(5*time.Second)) % 40
		text(fmt.Sprintf("%d.%d", 21+tenths/10, tenths%10))
		resp.Options = resp.Options.SetUint(coap.MaxAge, 5)
		resp.Options = resp.Options.Insert(coap.ETag, []byte(strconv.Itoa(tenths)))
	case "/actuators/valve":
		o.mu.Lock()
		defer o.mu.Unlock()
		switch r.Msg.Code {
		case coap.GET:
			text(o.valve)
		case coap.PUT:
			v := string(r.Msg.Payload)
			if v != "open" && v != "closed" {
				return coap.Errorf(coap.BadRequest, "want open or closed")
			}
			o.valve = v
			resp.Code = coap.Changed
		default:
			return coap.Errorf(coap.MethodNotAllowed, "")
		}
	case "/echo":
		resp.Code = map[coap.Code]coap.Code{coap.POST: coap.Changed, coap.PUT: coap.Changed, coap.DELETE: coap.Deleted}[r.Msg.Code]
		if resp.Code == 0 {
			resp.Code = coap.Content
		}
		if cf, ok := r.Msg.Options.Get(coap.ContentFormat); ok {
			resp.Options = resp.Options.Set(coap.ContentFormat, cf)
		}
		resp.Options = resp.Options.Insert(coap.ETag, []byte{0xe7})
		resp.Payload = r.Msg.Payload
	default:
		return coap.Errorf(coap.NotFound, "")
	}
	return w.WriteResponse(resp)
}
