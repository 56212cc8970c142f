package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

// counter counts one kind of operation; the first few failures are kept
// for the report.
type counter struct {
	ok, fail atomic.Int64
	mu       sync.Mutex
	errs     []string // guarded by mu: the first failures
}

func (c *counter) done(err error) {
	if err == nil {
		c.ok.Add(1)
		return
	}
	c.fail.Add(1)
	c.mu.Lock()
	if len(c.errs) < 5 {
		c.errs = append(c.errs, err.Error())
	}
	c.mu.Unlock()
}

func (c *counter) failures() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// load drives the daemon: forwarded GETs, cache hits, requests over the
// simulated radio, Observe churn, publications, topic churn and reloads.
type load struct {
	gw     atomic.Pointer[netip.AddrPort] // the proxy; replaced after a restart
	origin *origin
	rate   float64 // multiplies every worker's pace

	fwd, cached, radio, register, publish, topicChurn, reload counter

	notifications                atomic.Int64 // received by observers
	cancelled, forgotten, killed atomic.Int64 // how observations ended
	silent                       atomic.Int64 // observations that lived ≥ 2 s and got no notification
	live                         atomic.Int64 // observations open now

	topics []*topic
}

// topic is one pub-sub topic with one publisher, so that the last
// acknowledged publication is well defined.
type topic struct {
	name string
	data string // topic-data path, "/ps/data/..."

	mu      sync.Mutex
	acked   []byte   // guarded by mu: the payload of the last 2.01/2.04
	unknown [][]byte // guarded by mu: publications that got no answer, which the broker may apply at any time
}

func (l *load) proxy() netip.AddrPort { return *l.gw.Load() }

func pathOpts(path string) coap.Options {
	var o coap.Options
	for _, s := range strings.Split(strings.Trim(path, "/"), "/") {
		o = o.Insert(coap.URIPath, []byte(s))
	}
	return o
}

func newClient(ctx context.Context, addr string) (*coap.Endpoint, error) {
	t, err := coap.ListenUDP(ctx, addr)
	if err != nil {
		return nil, err
	}
	return coap.NewEndpoint(t, coap.EndpointConfig{}), nil
}

// do sends req to the proxy and checks the response code and, when want
// is not empty, that the payload starts with want.
func (l *load) do(ctx context.Context, ep *coap.Endpoint, req *coap.Message, code coap.Code, want string) (*coap.Message, error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := ep.Do(c, l.proxy(), req)
	if err != nil {
		return nil, err
	}
	if resp.Code != code {
		return resp, fmt.Errorf("%v: got %v %q, want %v", uriOf(req), resp.Code, resp.Payload, code)
	}
	if want != "" && !bytes.HasPrefix(resp.Payload, []byte(want)) {
		return resp, fmt.Errorf("%v: payload %q, want %q...", uriOf(req), resp.Payload, want)
	}
	return resp, nil
}

func uriOf(m *coap.Message) string {
	if v, ok := m.Options.Get(coap.ProxyURI); ok {
		return string(v)
	}
	return uriPath(m)
}

// every runs f every d/rate until ctx is done.
func (l *load) every(ctx context.Context, wg *sync.WaitGroup, d time.Duration, f func(i int)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Duration(float64(d) / l.rate))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			f(i)
		}
	}()
}

// setup creates the topics and gives each a first publication.
func (l *load) setup(ctx context.Context, ep *coap.Endpoint, n int) error {
	for i := range n {
		t, err := l.createTopic(ctx, ep, fmt.Sprintf("soak-%d", i))
		if err != nil {
			return err
		}
		if err := l.publishTo(ctx, ep, t, []byte("first")); err != nil {
			return err
		}
		l.topics = append(l.topics, t)
	}
	return nil
}

func (l *load) createTopic(ctx context.Context, ep *coap.Endpoint, name string) (*topic, error) {
	rt, cf := pubsub.RTData, uint16(0)
	props := pubsub.Properties{TopicName: &name, ResourceType: &rt, TopicContentFormat: &cf}
	body, err := props.Encode()
	if err != nil {
		return nil, err
	}
	req := &coap.Message{Type: coap.Confirmable, Code: coap.POST, Payload: body,
		Options: pathOpts("/ps").SetUint(coap.ContentFormat, uint32(pubsub.Defaults().ContentFormat))}
	resp, err := l.do(ctx, ep, req, coap.Created, "")
	if err != nil {
		return nil, fmt.Errorf("create topic %s: %w", name, err)
	}
	got, err := pubsub.DecodeProperties(resp.Payload)
	if err != nil || got.TopicData == nil {
		return nil, fmt.Errorf("create topic %s: no topic-data: %v", name, err)
	}
	var loc []string
	for v := range resp.Options.All(coap.LocationPath) {
		loc = append(loc, string(v))
	}
	return &topic{name: "/" + strings.Join(loc, "/"), data: *got.TopicData}, nil
}

// publishTo publishes payload and records it as acknowledged on 2.01 or
// 2.04, or as of unknown fate when no answer came. The exchange is never
// cut short, not even when the load ends: a request given up while in
// flight could still be applied after a later one was acknowledged (the
// two would be concurrent requests, which CoAP does not order), and the
// last acknowledged publication would mean nothing.
func (l *load) publishTo(_ context.Context, ep *coap.Endpoint, t *topic, payload []byte) error {
	req := &coap.Message{Type: coap.Confirmable, Code: coap.PUT, Payload: payload,
		Options: pathOpts(t.data).SetUint(coap.ContentFormat, 0)}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := ep.Do(c, l.proxy(), req)
	cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err != nil:
		t.unknown = append(t.unknown, payload)
		return fmt.Errorf("publish to %s: %w", t.data, err)
	case resp.Code == coap.Changed || resp.Code == coap.Created:
		t.acked = payload
		return nil
	default:
		return fmt.Errorf("publish to %s: %v %q", t.data, resp.Code, resp.Payload)
	}
}

// checkTopics reads every topic's data and compares it with the last
// acknowledged publication (or the one whose answer was lost).
func (l *load) checkTopics(ctx context.Context, ep *coap.Endpoint) error {
	var errs []error
	for _, t := range l.topics {
		resp, err := l.do(ctx, ep, &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(t.data)}, coap.Content, "")
		t.mu.Lock()
		acked, unknown := t.acked, slices.Clone(t.unknown)
		t.mu.Unlock()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("read %s: %w", t.data, err))
		case !bytes.Equal(resp.Payload, acked) && !slices.ContainsFunc(unknown, func(u []byte) bool { return bytes.Equal(u, resp.Payload) }):
			errs = append(errs, fmt.Errorf("%s holds %q; the last acknowledged publication was %q", t.data, resp.Payload, acked))
		}
	}
	return errors.Join(errs...)
}

// run starts the workers; they stop when ctx is done and wg is waited.
func (l *load) run(ctx context.Context, wg *sync.WaitGroup, eps []*coap.Endpoint) {
	originURI := "coap://" + l.origin.addr.String()
	// Forwarded GETs, every one to the origin: Proxy-Uri and a reverse route.
	for w := range 2 {
		ep := eps[w%len(eps)]
		l.every(ctx, wg, 20*time.Millisecond, func(i int) {
			req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
			if i%2 == 0 {
				req.Options = req.Options.Insert(coap.ProxyURI, []byte(originURI+"/fwd"))
			} else {
				req.Options = pathOpts("/origin/fwd")
			}
			_, err := l.do(ctx, ep, req, coap.Content, "fwd ")
			l.fwd.done(ctxErr(ctx, err))
		})
	}
	// Cache hits: 16 resources with Max-Age 5.
	for w := range 2 {
		ep := eps[(w+2)%len(eps)]
		l.every(ctx, wg, 20*time.Millisecond, func(i int) {
			k := (i*2 + w) % 16
			p := fmt.Sprintf("/cached/%d", k)
			_, err := l.do(ctx, ep, &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts("/origin" + p)}, coap.Content, "cached "+p)
			l.cached.done(ctxErr(ctx, err))
		})
	}
	// The simulated radio: a GET (often a cache hit) and a PUT (never).
	l.every(ctx, wg, 500*time.Millisecond, func(i int) {
		var err error
		if i%2 == 0 {
			_, err = l.do(ctx, eps[0], &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts("/node1/sensors/temp")}, coap.Content, "")
		} else {
			v := []byte("open")
			if i%4 == 1 {
				v = []byte("closed")
			}
			_, err = l.do(ctx, eps[0], &coap.Message{Type: coap.Confirmable, Code: coap.PUT, Payload: v, Options: pathOpts("/node1/actuators/valve")}, coap.Changed, "")
		}
		l.radio.done(ctxErr(ctx, err))
	})
	// Publishers, one per topic.
	for _, t := range l.topics {
		ep := eps[1%len(eps)]
		var seq int
		l.every(ctx, wg, 100*time.Millisecond, func(int) {
			seq++
			l.publish.done(l.publishTo(ctx, ep, t, fmt.Appendf(nil, "%s %d", t.name, seq)))
		})
	}
	// Topic churn: a topic created, published to and deleted.
	l.every(ctx, wg, 2*time.Second, func(i int) {
		l.topicChurn.done(ctxErr(ctx, l.churnTopic(ctx, eps[2%len(eps)], i)))
	})
	// Observers: each lives 2-8 s, then cancels, forgets (RST on the next
	// notification) or is killed (its socket closed: the proxy learns it
	// from ICMP or an unanswered CON).
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				l.observeOnce(ctx, i, n)
			}
		}()
	}
}

// ctxErr hides the failures that the end of the run causes.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (l *load) churnTopic(ctx context.Context, ep *coap.Endpoint, i int) error {
	t, err := l.createTopic(ctx, ep, fmt.Sprintf("churn-%d", i))
	if err != nil {
		return err
	}
	if err := l.publishTo(ctx, ep, t, []byte("x")); err != nil {
		return err
	}
	_, err = l.do(ctx, ep, &coap.Message{Type: coap.Confirmable, Code: coap.DELETE, Options: pathOpts(t.name)}, coap.Deleted, "")
	return err
}

func (l *load) observeOnce(ctx context.Context, i, n int) {
	ep, err := newClient(ctx, fmt.Sprintf("127.0.1.%d:0", i%50+1))
	if err != nil {
		l.register.done(err)
		sleepCtx(ctx, time.Second)
		return
	}
	defer ep.Close()
	var req *coap.Message
	switch {
	case i%3 == 2 && len(l.topics) > 0:
		req = &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(l.topics[(i+n)%len(l.topics)].data)}
	case i%3 == 1:
		req = &coap.Message{Type: coap.Confirmable, Code: coap.GET,
			Options: coap.Options(nil).Insert(coap.ProxyURI, fmt.Appendf(nil, "coap://%v/obs/%d", l.origin.addr, (i+n)%4))}
	default:
		req = &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts(fmt.Sprintf("/origin/obs/%d", (i+n)%4))}
	}
	var got atomic.Int64
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, o, err := ep.Observe(c, l.proxy(), req, func(*coap.Message) {
		got.Add(1)
		l.notifications.Add(1)
	})
	cancel()
	if err == nil && o == nil {
		err = fmt.Errorf("observe %s: not registered: %v %q", uriOf(req), resp.Code, resp.Payload)
	}
	l.register.done(ctxErr(ctx, err))
	if err != nil {
		sleepCtx(ctx, time.Second)
		return
	}
	l.live.Add(1)
	defer l.live.Add(-1)
	life := 2*time.Second + rand.N(6*time.Second)
	sleepCtx(ctx, life)
	if ctx.Err() != nil {
		return
	}
	if got.Load() == 0 {
		l.silent.Add(1)
	}
	switch rand.N(4) {
	case 0, 1:
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = o.Cancel(c)
		cancel()
		l.cancelled.Add(1)
	case 2:
		_ = o.Forget(ctx)
		sleepCtx(ctx, time.Second)
		l.forgotten.Add(1)
	default:
		l.killed.Add(1) // the deferred Close
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
