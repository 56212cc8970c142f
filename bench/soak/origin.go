package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// origin is the CoAP server behind the proxy:
//
//	/fwd         2.05, Max-Age 0: never cached, every GET is forwarded
//	/cached/<k>  2.05, Max-Age 5: mostly cache hits, refreshed every 5 s
//	/obs/<k>     observable (RFC 7641); a notification every 250 ms, every
//	             fifth CON, so that a gone observation is found
type origin struct {
	ep   *coap.Endpoint
	addr netip.AddrPort

	fwd, cached atomic.Int64 // requests served
	notified    atomic.Int64 // notifications sent

	mu   sync.Mutex
	obs  map[obsKey]coap.NotifyWriter // guarded by mu
	seq  uint32                       // guarded by mu
	stop chan struct{}
	wg   sync.WaitGroup
}

type obsKey struct {
	peer  netip.AddrPort
	token string
	path  string
}

func startOrigin(ctx context.Context) (*origin, error) {
	t, err := coap.ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("soak: origin: %w", err)
	}
	o := &origin{addr: t.LocalAddr(), obs: make(map[obsKey]coap.NotifyWriter), stop: make(chan struct{})}
	o.ep = coap.NewEndpoint(t, coap.EndpointConfig{Handler: coap.HandlerFunc(o.serve)})
	o.wg.Add(1)
	go o.notifyLoop()
	return o, nil
}

func (o *origin) close() {
	close(o.stop)
	o.wg.Wait()
	o.ep.Close()
}

func (o *origin) observers() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.obs)
}

func uriPath(m *coap.Message) string {
	var b strings.Builder
	for v := range m.Options.All(coap.URIPath) {
		b.WriteByte('/')
		b.Write(v)
	}
	return b.String()
}

func (o *origin) serve(_ context.Context, w coap.ResponseWriter, r *coap.Request) error {
	path := uriPath(r.Msg)
	if r.Msg.Code != coap.GET {
		return coap.Errorf(coap.MethodNotAllowed, "")
	}
	switch {
	case path == "/fwd":
		n := o.fwd.Add(1)
		m := &coap.Message{Code: coap.Content, Payload: fmt.Appendf(nil, "fwd %d", n)}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 0)
		return w.WriteResponse(m)
	case strings.HasPrefix(path, "/cached/"):
		o.cached.Add(1)
		m := &coap.Message{Code: coap.Content, Payload: []byte("cached " + path)}
		m.Options = m.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 5)
		return w.WriteResponse(m)
	case strings.HasPrefix(path, "/obs/"):
		k := obsKey{peer: r.Peer, token: string(r.Msg.Token), path: path}
		obs, has := r.Msg.Options.Uint(coap.Observe)
		o.mu.Lock()
		defer o.mu.Unlock()
		m := o.rep(path)
		nw, ok := w.(coap.NotifyWriter)
		switch {
		case has && obs == 0 && ok:
			o.obs[k] = nw
			m.Options = m.Options.SetUint(coap.Observe, o.seq)
		case has && obs == 1:
			delete(o.obs, k) // RFC 7641 §3.6: deregistration
		}
		return w.WriteResponse(m)
	}
	return coap.Errorf(coap.NotFound, "")
}

// rep is the representation of an observable resource; the caller holds mu.
func (o *origin) rep(path string) *coap.Message {
	m := &coap.Message{Code: coap.Content, Payload: fmt.Appendf(nil, "%s %d", path, o.seq)}
	m.Options = m.Options.SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 60)
	return m
}

func (o *origin) notifyLoop() {
	defer o.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		o.mu.Lock()
		o.seq = (o.seq + 1) & 0xffffff
		con := o.seq%5 == 0
		type target struct {
			k  obsKey
			nw coap.NotifyWriter
			m  *coap.Message
		}
		ts := make([]target, 0, len(o.obs))
		for k, nw := range o.obs {
			m := o.rep(k.path)
			m.Options = m.Options.SetUint(coap.Observe, o.seq)
			ts = append(ts, target{k, nw, m})
		}
		o.mu.Unlock()
		for _, t := range ts {
			o.notified.Add(1)
			gone := func(err error) {
				if err != nil { // RST, timeout, unreachable: the observation is gone
					o.mu.Lock()
					delete(o.obs, t.k)
					o.mu.Unlock()
				}
			}
			gone(t.nw.Notify(t.m, con, gone))
		}
	}
}
