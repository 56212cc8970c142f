package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	gcdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	gcpool "github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	gcnet "github.com/plgd-dev/go-coap/v3/net"
	gcclient "github.com/plgd-dev/go-coap/v3/net/client"
	gcopts "github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	gctcpserver "github.com/plgd-dev/go-coap/v3/tcp/server"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/testpeer"
)

// goOrigin is a go-coap server: /r holds what was PUT last, /big is a
// representation of three 1024-byte blocks (RFC 7959), /obs is
// observable and notifies when notify is called.
type goOrigin struct {
	mu    sync.Mutex
	value []byte
	obs   []goObserver // guarded by mu
	seq   uint32
	regs  int
}

type goObserver struct {
	cc  mux.Conn
	tok []byte
}

var bigBody = bytes.Repeat([]byte("0123456789abcdef"), 3*1024/16)

func (o *goOrigin) router() *mux.Router {
	r := mux.NewRouter()
	r.Handle("/r", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		o.mu.Lock()
		defer o.mu.Unlock()
		switch m.Code() {
		case codes.PUT:
			b, _ := io.ReadAll(m.Body())
			o.value = b
			w.SetResponse(codes.Changed, message.TextPlain, nil)
		default:
			w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader(o.value))
		}
	}))
	r.Handle("/big", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader(bigBody))
	}))
	r.Handle("/obs", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if v, err := m.Options().Observe(); err == nil && v == 0 {
			o.regs++
			o.obs = append(o.obs, goObserver{w.Conn(), append([]byte(nil), m.Token()...)})
			w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte(fmt.Sprintf("n%d", o.seq))), message.Option{ID: message.Observe, Value: []byte{byte(o.seq + 2)}})
			return
		}
		w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte(fmt.Sprintf("n%d", o.seq))))
	}))
	return r
}

// notify sends the next state to every observer.
func (o *goOrigin) notify(t *testing.T) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	for _, ob := range o.obs {
		m := ob.cc.AcquireMessage(ob.cc.Context())
		m.SetCode(codes.Content)
		m.SetToken(ob.tok)
		m.SetContentFormat(message.TextPlain)
		m.SetObserve(o.seq + 2)
		m.SetBody(bytes.NewReader([]byte(fmt.Sprintf("n%d", o.seq))))
		if err := ob.cc.WriteMessage(m); err != nil {
			t.Logf("notify: %v", err)
		}
		ob.cc.ReleaseMessage(m)
	}
}

// startGoOrigin serves o over UDP ("udp") or TCP ("tcp") with go-coap.
func startGoOrigin(t *testing.T, o *goOrigin, network string) netip.AddrPort {
	t.Helper()
	opt := gcopts.WithMux(o.router())
	if network == "udp" {
		l, err := gcnet.NewListenUDP("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveGo(t, udp.NewServer(opt), l, l.Close)
		return l.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	}
	l, err := gcnet.NewTCPListener("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveGo[gctcpserver.Listener](t, tcp.NewServer(opt), l, l.Close)
	return l.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
}

// serveGo runs a go-coap server on l until the test ends.
func serveGo[L any](t *testing.T, s interface {
	Serve(L) error
	Stop()
}, l L, closeL func() error) {
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-done; _ = closeL() })
}

// goClient is what the test needs of go-coap's UDP, DTLS and TCP clients.
type goClient interface {
	Get(ctx context.Context, path string, opts ...message.Option) (*gcpool.Message, error)
	Put(ctx context.Context, path string, contentFormat message.MediaType, payload io.ReadSeeker, opts ...message.Option) (*gcpool.Message, error)
	Observe(ctx context.Context, path string, observeFunc func(*gcpool.Message), opts ...message.Option) (gcclient.Observation, error)
	Close() error
}

func body(t *testing.T, m *gcpool.Message) string {
	t.Helper()
	b, err := m.ReadBody()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func proxyOpt(uri string) message.Option {
	return message.Option{ID: message.ProxyURI, Value: []byte(uri)}
}

// goCoapRoundTrips runs GET, PUT, a block-wise GET and an observation
// with two notifications through the proxy to the origin at base.
func goCoapRoundTrips(t *testing.T, c goClient, o *goOrigin, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := "put-" + strings.ReplaceAll(base, "/", "")
	resp, err := c.Put(ctx, "", message.TextPlain, bytes.NewReader([]byte(want)), proxyOpt(base+"/r"))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp, err = c.Get(ctx, "", proxyOpt(base+"/r"))
	if err != nil || resp.Code() != codes.Content || body(t, resp) != want {
		t.Fatalf("GET: %v %v", resp, err)
	}
	resp, err = c.Get(ctx, "", proxyOpt(base+"/big"))
	if err != nil || resp.Code() != codes.Content {
		t.Fatalf("block-wise GET: %v %v", resp, err)
	}
	if got := body(t, resp); got != string(bigBody) {
		t.Fatalf("block-wise GET: %d bytes, want %d", len(got), len(bigBody))
	}
	got := make(chan string, 10)
	ob, err := c.Observe(ctx, "", func(m *gcpool.Message) {
		b, _ := m.ReadBody()
		got <- string(b)
	}, proxyOpt(base+"/obs"))
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	defer ob.Cancel(ctx)
	first := <-got
	for i := range 2 {
		o.notify(t)
		o.mu.Lock()
		want := fmt.Sprintf("n%d", o.seq)
		o.mu.Unlock()
		for {
			select {
			case n := <-got:
				if n == first {
					continue // the registration's response, repeated by some clients
				}
				if n != want {
					t.Fatalf("notification %d: %q, want %q", i, n, want)
				}
			case <-ctx.Done():
				t.Fatalf("notification %d (%s) missing", i, want)
			}
			break
		}
	}
}

// go-coap clients over UDP, DTLS, TCP and TLS through gatewayd to a
// go-coap origin over UDP: GET, PUT, block-wise GET (RFC 7959) and
// Observe with notifications.
func TestGoCoapClientsThroughProxy(t *testing.T) {
	o := &goOrigin{}
	origin := startGoOrigin(t, o, "udp")
	base := fmt.Sprintf("coap://%v", origin)
	pki := testpeer.NewPKI(t)
	p := startProxy(t, func(c *Config) {
		c.Proxy.Timeout = Duration{5 * time.Second}
		c.Proxy.Listen = []string{"udp://127.0.0.1:0", "dtls://127.0.0.1:0", "tcp://127.0.0.1:0", "tls://127.0.0.1:0"}
		c.Proxy.PSKFile = writeTemp(t, "psk", "goclient:go-secret\n")
		c.Proxy.CertFile, c.Proxy.KeyFile = pki.File("server.pem"), pki.File("server.key")
	})
	for _, tc := range []struct {
		name string
		dial func() (goClient, error)
	}{
		{"udp", func() (goClient, error) { return udp.Dial(p.Addrs()[0].String()) }},
		{"dtls", func() (goClient, error) {
			return gcdtls.Dial(p.Addrs()[1].String(), &piondtls.Config{
				PSK:             func([]byte) ([]byte, error) { return []byte("go-secret"), nil },
				PSKIdentityHint: []byte("goclient"),
				CipherSuites:    []piondtls.CipherSuiteID{piondtls.TLS_PSK_WITH_AES_128_CCM_8},
			})
		}},
		{"tcp", func() (goClient, error) { return tcp.Dial(p.StreamAddrs()[0].String()) }},
		{"tls", func() (goClient, error) {
			return tcp.Dial(p.StreamAddrs()[1].String(), gcopts.WithTLS(&tls.Config{RootCAs: pki.CA, ServerName: "127.0.0.1", NextProtos: []string{"coap"}}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			goCoapRoundTrips(t, c, o, base)
		})
	}
}

// A go-coap origin over TCP behind gatewayd (coap+tcp://): a go-coap TCP
// client and a UDP client reach it through the same pooled connection.
func TestGoCoapTCPOriginThroughProxy(t *testing.T) {
	o := &goOrigin{}
	origin := startGoOrigin(t, o, "tcp")
	base := fmt.Sprintf("coap+tcp://%v", origin)
	p := startStreamProxy(t, func(c *Config) { c.Proxy.Timeout = Duration{5 * time.Second} }, "tcp://127.0.0.1:0")
	c, err := tcp.Dial(p.StreamAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	goCoapRoundTrips(t, c, o, base)
	resp := getVia(t, p, base+"/r")
	if resp.Code != coap.Content || !strings.HasPrefix(string(resp.Payload), "put-") {
		t.Fatalf("UDP client: %v %q", resp.Code, resp.Payload)
	}
	if st := p.streamUp.cl.Stats(); st.Accepted != 1 {
		t.Fatalf("%d connections dialled to the origin, want 1", st.Accepted)
	}
}
