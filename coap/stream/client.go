package stream

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/coder/websocket"

	"github.com/opaque-edge/gatewayd/coap"
)

// Client dials connections for requests of its own and owns them: Close
// closes every one and waits. A Handler in its Config serves the requests
// the servers it dials send back (§3.3: either side may send requests).
type Client struct {
	cfg Config
	st  counters
	ctx context.Context
	end context.CancelFunc
	wg  sync.WaitGroup
}

// NewClient returns a client.
func NewClient(cfg Config) *Client {
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg}
	c.ctx, c.end = context.WithCancel(context.Background())
	return c
}

// Stats returns the counters of the client's connections.
func (cl *Client) Stats() Stats { return cl.st.stats() }

// Close closes the connections the client dialled and waits for them.
func (cl *Client) Close() error {
	cl.end()
	cl.wg.Wait()
	return nil
}

// Dial opens CoAP over TCP to addr (§3), or over TLS when tc is not nil
// (§8.2: ALPN "coap" is offered; a server that negotiates another
// protocol is refused). It returns once our CSM is sent; requests may
// follow at once (§3.3).
func (cl *Client) Dial(ctx context.Context, addr string, tc *tls.Config) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stream: dial %s: %w", addr, err)
	}
	peer, _ := addrPort(nc.RemoteAddr())
	if tcp, ok := nc.(*net.TCPConn); ok {
		tcp.SetNoDelay(true)
	}
	identity := ""
	var t transport = newStreamTransport(nc)
	if tc != nil {
		tc = tc.Clone()
		if len(tc.NextProtos) == 0 {
			tc.NextProtos = []string{"coap"}
		}
		tlc := tls.Client(nc, tc)
		if err := tlc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("stream: TLS handshake with %s: %w", addr, err)
		}
		cs := tlc.ConnectionState()
		if cs.NegotiatedProtocol != "" && cs.NegotiatedProtocol != "coap" {
			tlc.Close()
			return nil, fmt.Errorf("stream: %s negotiated ALPN %q, not coap", addr, cs.NegotiatedProtocol)
		}
		if len(cs.PeerCertificates) > 0 {
			identity = identityOf(cs.PeerCertificates[0])
		}
		t = newStreamTransport(tlc)
	}
	return cl.run(t, peer, tc != nil, identity), nil
}

// DialWS opens CoAP over WebSockets (§4) to url ("ws://host:port/path" or
// "wss://…"), with the subprotocol "coap" (§4.1). hc, when not nil, is
// the HTTP client for the handshake (its TLS settings for wss).
func (cl *Client) DialWS(ctx context.Context, url string, hc *http.Client) (*Conn, error) {
	var raw net.Conn
	hc, tr := keepConn(hc, &raw)
	wc, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"coap"}, HTTPClient: hc})
	if err != nil {
		if tr != nil {
			tr.CloseIdleConnections()
		}
		return nil, fmt.Errorf("stream: WebSocket %s: %w", url, err)
	}
	if wc.Subprotocol() != "coap" {
		wc.CloseNow()
		return nil, fmt.Errorf("stream: WebSocket %s: server did not select subprotocol coap", url)
	}
	wc.SetReadLimit(int64(cl.cfg.MaxMessageSize))
	var peer netip.AddrPort
	if raw != nil { // nil when hc's transport is not an *http.Transport
		peer, _ = addrPort(raw.RemoteAddr())
	}
	secure := resp != nil && resp.TLS != nil
	return cl.run(newWSTransport(wc, raw), peer, secure, ""), nil
}

// keepConn returns hc with a copy of its *http.Transport (or the default
// one) that stores in *raw the connection it dials, and that transport;
// hc as it is, and nil, for another kind of transport.
func keepConn(hc *http.Client, raw *net.Conn) (*http.Client, *http.Transport) {
	if hc == nil {
		hc = &http.Client{}
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return hc, nil
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			*raw = c
		}
		return c, err
	}
	c := *hc
	c.Transport = tr
	return &c, tr
}

// run starts a dialled connection.
func (cl *Client) run(t transport, peer netip.AddrPort, secure bool, identity string) *Conn {
	c := newConn(t, &cl.cfg, &cl.st, peer, secure, identity, cl.ctx, &cl.wg)
	cl.st.accepted.Add(1)
	cl.st.conns.Add(1)
	c.start()
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		select {
		case <-c.done:
		case <-cl.ctx.Done():
			c.closeWith(ErrClosed)
			<-c.done
		}
		c.closeWith(ErrClosed)
		if wt, ok := t.(*wsTransport); ok {
			wt.wait()
		}
		cl.st.conns.Add(-1)
	}()
	return c
}

// Do sends a request and waits for its response. The connection sets the
// token.
func (c *Conn) Do(ctx context.Context, req *coap.Message) (*coap.Message, error) {
	resp, _, err := c.exchange(ctx, req, nil)
	return resp, err
}

// Observe sends req with Observe=0 (RFC 7641 §3.1) and returns the first
// response; notifications go to notify, in order, on the connection's
// reader: notify must not block. When the server registered the
// observation, cancel deregisters it with a GET with Observe=1 and the
// same token, which is how a client ends one over a stream (RFC 8323
// §7.4), or forgets it when req has an OSCORE option; otherwise cancel
// is nil.
func (c *Conn) Observe(ctx context.Context, req *coap.Message, notify func(*coap.Message)) (*coap.Message, func(context.Context) error, error) {
	r := *req
	r.Options = append(coap.Options(nil), req.Options...).SetUint(coap.Observe, 0)
	resp, tok, err := c.exchange(ctx, &r, notify)
	if err != nil || resp.Code.Class() != 2 || !resp.Options.Has(coap.Observe) {
		return resp, nil, err
	}
	cancel := func(ctx context.Context) error {
		c.forget(tok)
		if req.Options.Has(coap.OSCORE) {
			// A protected observation is cancelled by a protected request
			// (RFC 8613 §4.1.3.5.1), which only its client can make: a
			// proxy forgets it, and drops the notifications that still
			// come with its token.
			return nil
		}
		d := *req
		d.Options = append(coap.Options(nil), req.Options...).SetUint(coap.Observe, 1)
		_, err := c.exchangeToken(ctx, &d, tok, nil)
		return err
	}
	return resp, cancel, nil
}

// forget ends an observation without a request: later notifications with
// its token are dropped.
func (c *Conn) forget(tok []byte) {
	c.mu.Lock()
	delete(c.calls, tokenKey(tok))
	c.mu.Unlock()
}

// exchange allocates a token and runs one exchange.
func (c *Conn) exchange(ctx context.Context, req *coap.Message, notify func(*coap.Message)) (*coap.Message, []byte, error) {
	c.mu.Lock()
	c.nextTok++
	tok := binary.BigEndian.AppendUint64(nil, c.nextTok)
	c.mu.Unlock()
	resp, err := c.exchangeToken(ctx, req, tok, notify)
	return resp, tok, err
}

func (c *Conn) exchangeToken(ctx context.Context, req *coap.Message, tok []byte, notify func(*coap.Message)) (*coap.Message, error) {
	cl := &call{ch: make(chan *coap.Message, 1), notify: notify}
	k := tokenKey(tok)
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	if c.calls == nil {
		c.calls = map[uint64]*call{}
	}
	c.calls[k] = cl
	c.mu.Unlock()
	m := *req
	m.Token = tok
	if err := c.sendMsg(&m, nil, true); err != nil {
		c.mu.Lock()
		delete(c.calls, k)
		c.mu.Unlock()
		return nil, err
	}
	select {
	case resp, ok := <-cl.ch:
		if !ok {
			return nil, fmt.Errorf("%w: %w", ErrClosed, c.Err())
		}
		return resp, nil
	case <-ctx.Done():
		c.mu.Lock()
		if c.calls[k] == cl {
			delete(c.calls, k)
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}
