package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

// The amplification cases of docs/SECURITY.md, each measured as an
// attacker who forges a victim's address would make it: requests sent
// from the victim's socket, NON, never acknowledged; the factor is the
// UDP payload bytes the victim receives over those it (seemingly) sent.
// From an unverified address every factor is at most 3; from a verified
// one the answers are whole, so the same factors are large. Run with -v
// to see them.
func TestAmplificationFactors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(*Config)
		attack func(t *testing.T, p *Proxy, v *ampPeer)
	}{
		{"/.well-known/core with 1,000 routes", func(c *Config) {
			for i := range 1000 {
				c.Route = append(c.Route, RouteConfig{Name: fmt.Sprintf("route-%04d-%s", i, strings.Repeat("x", 28)), Target: "coap://127.0.0.1:9/"})
			}
		}, func(t *testing.T, p *Proxy, v *ampPeer) {
			v.send(wkcRequest(""), p.Addrs()[0])
			v.recvInto()
		}},
		{"/.well-known/core with 256 topics of long names", func(c *Config) {
			brokerConfig(t, c)
			c.PubSub.MaxTopicsPerClient = 256
			c.PubSub.MinPublishInterval.Duration = 0
		}, func(t *testing.T, p *Proxy, v *ampPeer) {
			long := func(i int, what string) string {
				return fmt.Sprintf("%s-%03d-%s", what, i, strings.Repeat("n", 64-len(what)-5))
			}
			c := client(t) // 127.0.0.1: verified, and an admin
			for i := range 256 {
				name, rt, data := long(i, "topic"), long(i, "rt"), "/ps/data/"+long(i, "d")[:63]
				props := pubsub.Properties{TopicName: &name, ResourceType: &rt, TopicData: &data}
				body, err := props.Encode()
				if err != nil {
					t.Fatal(err)
				}
				create := &coap.Message{Code: coap.POST, Options: pathOpts("ps").SetUint(coap.ContentFormat, 65001), Payload: body}
				if resp := do(t, c, p, create); resp.Code != coap.Created {
					t.Fatalf("topic %d: %v %q", i, resp.Code, resp.Payload)
				}
			}
			v.send(wkcRequest(""), p.Addrs()[0])
			v.recvInto()
		}},
		{"a cache hit on 60 KB (NON GET)", nil, func(t *testing.T, p *Proxy, v *ampPeer) {
			_, uri := bigOrigin(t, 60000)
			if resp := do(t, client(t), p, &coap.Message{Code: coap.GET, Options: proxyURI(uri)}); len(resp.Payload) != 60000 {
				t.Fatalf("warming the cache: %v, %d bytes", resp.Code, len(resp.Payload))
			}
			v.send(&coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Options: proxyURI(uri)}, p.Addrs()[0])
			v.recvInto()
		}},
		{"an Observe registration (NON) and 200 notifications of 450 bytes", nil, func(t *testing.T, p *Proxy, v *ampPeer) {
			origin, uri := observableServer(t)
			origin.mu.Lock()
			origin.pad = 450
			origin.mu.Unlock()
			reg := &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Options: proxyURI(uri)}
			reg.Options = reg.Options.SetUint(coap.Observe, 0)
			v.send(reg, p.Addrs()[0])
			// The registration has been handled when the client has its
			// answer; notifications follow if it made an observer.
			v.recvInto()
			origin.mu.Lock()
			observed := len(origin.obs) > 0
			origin.mu.Unlock()
			for i := range uint64(200) {
				origin.notify()
				if !observed {
					continue
				}
				// One at a time, as a resource that changes now and then:
				// each is sent before the next comes, unless the observer
				// waits for the ACK of a CON (con_every), when it replaces
				// the one before in the observer's slot (RFC 7641 §4.5).
				if i < uint64(p.cfg.Observe.CONEvery) {
					v.recvInto()
					continue
				}
				waitFor(t, "the notification handled", func() bool {
					s := p.Hub().Stats()
					return s.NotificationsIn == i+1 && s.NotificationsOut+s.Skipped == i
				}, func() string { return fmt.Sprintf("%+v", p.Hub().Stats()) })
			}
			if n := p.Hub().Stats().Observers; !observed && n != 0 {
				t.Fatalf("%d observers", n)
			}
		}},
	} {
		for _, verified := range []bool{false, true} {
			who := "unverified"
			if verified {
				who = "verified"
			}
			t.Run(tc.name+"/"+who, func(t *testing.T) {
				p := startProxy(t, func(c *Config) {
					c.Proxy.Timeout = Duration{5 * time.Second}
					// The victim is 127.0.0.2; the test's own helpers
					// (cache warming, topic creation) use 127.0.0.1.
					c.Proxy.Verified = []string{"127.0.0.1/32"}
					if verified {
						c.Proxy.Verified = append(c.Proxy.Verified, "127.0.0.2/32")
					}
					if tc.config != nil {
						tc.config(c)
					}
				})
				v := newAmpPeer(t, 2)
				tc.attack(t, p, v)
				in, out := v.drain(p)
				f := float64(in) / float64(out)
				t.Logf("%s, %s: %d bytes out for %d in: %.1f×", tc.name, who, in, out, f)
				if !verified && f > 3 {
					t.Fatalf("%.1f× to an unverified address, over 3×", f)
				}
				if verified && f <= 3 {
					t.Fatalf("%.1f× to a verified address: its answers are cut", f)
				}
			})
		}
	}
}

// recvInto reads one datagram, counting it in the peer's received bytes.
func (a *ampPeer) recvInto() { a.recv() }

// drain sends a sentinel request and reads everything until its answer:
// whatever the attack made the proxy send comes before it (one socket,
// over loopback, in order). It returns the bytes received and sent for
// the attack, the sentinel's exchange not counted.
func (a *ampPeer) drain(p *Proxy) (in, out int) {
	a.t.Helper()
	out = a.out
	sentinel := &coap.Message{Type: coap.NonConfirmable, Code: coap.GET, Token: []byte("sentinel"), Options: pathOpts("no-such-resource")}
	a.send(sentinel, p.Addrs()[0])
	before := a.in
	for {
		m := a.recv()
		if string(m.Token) == "sentinel" {
			return before, out
		}
		before = a.in
	}
}
