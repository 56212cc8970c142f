package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// A representation larger than one block changes while gatewayd holds its
// blocks (RFC 7959 §2.10): libcoap (which compares ETags across blocks and
// starts over when they differ, §2.4) and node-coap (which does not) fetch
// it through the whole chain, and each must get exactly one
// representation, byte for byte, never blocks of two.

// changingOrigin is an origin with one resource that changes, /big, served block-wise
// (RFC 7959 §2.4: in 64-byte blocks unless the request asks for smaller)
// with its ETag, Content-Format 42 and Max-Age 1 for block 0 and 60 for
// the others; a request carrying the current ETag gets 2.03. It can be
// observed (RFC 7641): a notification carries block 0 (RFC 7959 §3).
type changingOrigin struct {
	addr netip.AddrPort
	mu   sync.Mutex
	body []byte              // guarded by mu
	tag  []byte              // guarded by mu
	obs  []coap.NotifyWriter // guarded by mu
	seq  uint32              // guarded by mu: the Observe sequence number
	got  []*coap.Message     // guarded by mu: the requests
}

func startChangingOrigin(t *testing.T, body []byte) *changingOrigin {
	t.Helper()
	o := &changingOrigin{}
	o.set(body)
	u, err := coap.ListenUDP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = u.LocalAddr()
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: o})
	t.Cleanup(func() { e.Close() })
	return o
}

// set changes the representation: body with an ETag of its own.
func (o *changingOrigin) set(body []byte) {
	sum := sha256.Sum256(body)
	o.mu.Lock()
	o.body, o.tag = body, sum[:8]
	o.mu.Unlock()
}

func (o *changingOrigin) block(num, szx uint32) *coap.Message {
	age := uint32(60)
	if num == 0 {
		age = 1
	}
	size := uint32(16) << szx
	start := min(num*size, uint32(len(o.body)))
	end := min(start+size, uint32(len(o.body)))
	var more uint32
	if end < uint32(len(o.body)) {
		more = 1
	}
	m := &coap.Message{Code: coap.Content, Payload: o.body[start:end]}
	m.Options = m.Options.Insert(coap.ETag, o.tag).SetUint(coap.ContentFormat, 42).SetUint(coap.MaxAge, age).
		SetUint(coap.Block2, num<<4|more<<3|szx)
	return m
}

func (o *changingOrigin) ServeCoAP(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, r.Msg.Clone())
	num, szx := uint32(0), uint32(2)
	if v, ok := r.Msg.Options.Uint(coap.Block2); ok {
		num, szx = v>>4, min(v&7, 2)
	}
	for v := range r.Msg.Options.All(coap.ETag) {
		if bytes.Equal(v, o.tag) {
			age, _ := o.block(num, szx).Options.Uint(coap.MaxAge)
			m := &coap.Message{Code: coap.Valid}
			m.Options = m.Options.Insert(coap.ETag, o.tag).SetUint(coap.MaxAge, age)
			return w.WriteResponse(m)
		}
	}
	resp := o.block(num, szx)
	switch v, ok := r.Msg.Options.Uint(coap.Observe); {
	case ok && v == 0 && num == 0:
		nw, ok := w.(coap.NotifyWriter)
		if !ok {
			return coap.Errorf(coap.InternalServerError, "the writer cannot notify")
		}
		o.obs = append(o.obs, nw)
		o.seq++
		resp.Options = resp.Options.SetUint(coap.Observe, o.seq)
	case ok && v == 1:
		o.obs = nil
	}
	return w.WriteResponse(resp)
}

// notify sends every observer the first block of the representation now.
func (o *changingOrigin) notify(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.obs) == 0 {
		t.Fatal("nobody observes the origin")
	}
	o.seq++
	for _, w := range o.obs {
		n := o.block(0, 2)
		n.Options = n.Options.SetUint(coap.Observe, o.seq)
		if err := w.Notify(n, true, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// revalidated counts the requests for block 0 that carried ETag tag.
func (o *changingOrigin) revalidated(tag []byte) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, m := range o.got {
		b, _ := m.Options.Uint(coap.Block2)
		if v, ok := m.Options.Get(coap.ETag); ok && bytes.Equal(v, tag) && b>>4 == 0 {
			n++
		}
	}
	return n
}

func (o *changingOrigin) etag() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tag
}

// representation is n random bytes: no run of one can pass for a part of
// another.
func representation(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%d bytes sha256 %x", len(b), h[:8])
}

// lastOf is the last n bytes of a log.
func lastOf(log string, n int) string {
	if len(log) > n {
		return "..." + log[len(log)-n:]
	}
	return log
}

// partsOf tells which of versions (v1, v2, ...) each 64-byte block of got
// is from, in runs: "v3 [0], v1 [1-47]" is a splice.
func partsOf(got []byte, versions ...[]byte) string {
	var out []string
	from, last := 0, ""
	for i := 0; ; i++ {
		label := ""
		if i*64 < len(got) {
			part := got[i*64 : min(i*64+64, len(got))]
			label = "?"
			for j, v := range versions {
				if i*64+len(part) <= len(v) && bytes.Equal(part, v[i*64:i*64+len(part)]) {
					label = fmt.Sprintf("v%d", j+1)
					break
				}
			}
		}
		if label != last && last != "" {
			out = append(out, fmt.Sprintf("%s [%d-%d]", last, from, i-1))
		}
		if label == "" {
			return strings.Join(out, ", ")
		}
		if label != last {
			from, last = i, label
		}
	}
}

func TestBlockwiseRepresentationChangeIsNeverSplicedByTheCache(t *testing.T) {
	v1, v2, v3 := representation(3072), representation(3072), representation(3072)
	o := startChangingOrigin(t, v1)
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} })
	uri := fmt.Sprintf("coap://%s/big", o.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fetch := func(i int) []byte {
		t.Helper()
		c := testpeer.StartLibcoap(ctx, t, i, "-m", "get", "-b", "64", "-B", "20", "-P", "coap://"+p.Addrs()[0].String(), uri)
		if err := c.Wait(); err != nil {
			t.Fatalf("coap-client %d: %v; the end of its log:\n%s", i, err, lastOf(c.Log(), 4000))
		}
		return []byte(c.Payloads())
	}

	if got := fetch(0); !bytes.Equal(got, v1) {
		t.Fatalf("first fetch: %s (%s), want v1 %s", digestOf(got), partsOf(got, v1), digestOf(v1))
	}
	fetched := time.Now()
	if s := p.Cache().Stats(); s.Entries < 48 {
		t.Fatalf("%d entries cached, want the 48 blocks of v1", s.Entries)
	}
	oldTag := o.etag()
	o.set(v2)
	// Block 0 was stored before the client had it, with Max-Age 1: a
	// second later it is stale, while blocks 1 to 47 (Max-Age 60) are
	// fresh. The proxy's cache runs on the system clock, and Max-Age
	// counts whole seconds; this waits for no more than that second.
	time.Sleep(time.Until(fetched.Add(time.Second)))
	superseded := p.Cache().Stats().Superseded
	if got := fetch(1); !bytes.Equal(got, v2) {
		t.Errorf("fetch after block 0 expired: %s (%s), want v2 %s", digestOf(got), partsOf(got, v1, v2), digestOf(v2))
	}
	if n := o.revalidated(oldTag); n != 1 {
		t.Errorf("the origin saw %d validations of block 0 with v1's ETag, want 1", n)
	}
	if s := p.Cache().Stats(); s.Superseded-superseded != 47 {
		t.Errorf("%d blocks superseded, want v1's 47 after block 0", s.Superseded-superseded)
	}

	// node-coap asks without Block2 first, another entry, which is not
	// cached: block 0 of v3 comes while v2's blocks 1 to 47 are fresh
	// under the keys node-coap asks for next. It compares no ETags.
	o.set(v3)
	superseded = p.Cache().Stats().Superseded
	req := toProxy(p)
	req.ProxyURI = uri
	resp := testpeer.NodeCoap(ctx, t, req)
	if resp.Code != "2.05" || !bytes.Equal(resp.Payload, v3) {
		t.Errorf("node-coap: %s %s (%s), want v3 %s", resp.Code, digestOf(resp.Payload), partsOf(resp.Payload, v1, v2, v3), digestOf(v3))
	}
	if s := p.Cache().Stats(); s.Superseded-superseded != 48 {
		t.Fatalf("%d blocks superseded, want v2's 48 (block 0 under libcoap's key too)", s.Superseded-superseded)
	}
}

// RFC 7959 §3, RFC 7641 §3.4: a notification carries the first block of
// the new representation, and the observer fetches the others with GET
// and Block2, without Observe, through gatewayd. The Observe hub stores
// the notification in the cache, which must then no longer hold the old
// representation's blocks.
func TestBlockwiseNotificationEndsTheOldRepresentationsBlocks(t *testing.T) {
	v1, v2 := representation(3072), representation(3072)
	o := startChangingOrigin(t, v1)
	p := startProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := testpeer.StartLibcoap(ctx, t, 0, "-s", "40", "-m", "get", "-b", "64",
		"-P", "coap://"+p.Addrs()[0].String(), fmt.Sprintf("coap://%s/big", o.addr))
	defer func() {
		c.Kill()
		c.Wait()
	}()
	wait := func(what string, want []byte, done func(got []byte) bool) []byte {
		t.Helper()
		var got []byte
		defer func() {
			if t.Failed() {
				t.Logf("%s: the observer has %s (%s), want %s; the end of its log:\n%s", what, digestOf(got), partsOf(got, v1, v2), digestOf(want), lastOf(c.Log(), 4000))
			}
		}()
		testutil.EventuallyWithin(t, 20*time.Second, what, func() bool {
			got = []byte(c.Payloads())
			return done(got)
		})
		return got
	}
	wait("registration", v1, func(got []byte) bool { return bytes.Equal(got, v1) })
	if s := p.Hub().Stats(); s.Observers != 1 || s.Upstreams != 1 {
		t.Fatalf("hub %+v, want one observer", s)
	}
	o.set(v2)
	o.notify(t)
	// The body after v1 must be exactly v2, and the observer must not
	// have had to start over for it (§2.4): without the cache dropping
	// v1's blocks it starts over thousands of times, and were the cache
	// told of v2 after the observer, its request for block 1 could still
	// find v1's.
	got := wait("notification of v2", v2, func(got []byte) bool {
		return bytes.HasPrefix(got, v1) && len(got) >= len(v1)+len(v2) && bytes.HasSuffix(got, v2)
	})
	if n := strings.Count(c.Log(), "Data body updated during receipt"); n > 0 || len(got) != len(v1)+len(v2) {
		t.Fatalf("the observer started over %d times for v2 (%s); the end of its log:\n%s", n, partsOf(got[len(v1):], v2), lastOf(c.Log(), 4000))
	}
	if s := p.Cache().Stats(); s.Superseded < 47 {
		t.Fatalf("%d blocks superseded, want v1's 47", s.Superseded)
	}
}
