package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

// DoFunc sends a CoAP request into gatewayd's chain; see
// httpcoap.DoFunc.
type DoFunc func(ctx context.Context, req *coap.Message, secure bool) (*coap.Message, error)

// ObserveFunc observes a CoAP URI through gatewayd's chain (its Observe hub
// keeps one observation per resource however many bridges and clients
// want it) until the observation ends or ctx is done, and says why it
// ended. fn receives every representation, the first response included,
// in order and from one goroutine at a time, never after ObserveFunc
// returns; it must not block.
type ObserveFunc func(ctx context.Context, uri string, fn func(n *coap.Message)) error

// HostObserveFunc is sdk.Host's Observe: it observes with a CoAP request
// through gatewayd's chain, passing fn the first response and every
// notification, until the observation ends or ctx is done.
type HostObserveFunc func(ctx context.Context, req *coap.Message, secure bool, fn func(*coap.Message)) error

// ObserveURI makes an ObserveFunc out of a HostObserveFunc: it observes
// uri with a GET carrying it as Proxy-Uri.
func ObserveURI(observe HostObserveFunc) ObserveFunc {
	return func(ctx context.Context, uri string, fn func(*coap.Message)) error {
		if err := checkCoAPURI(uri); err != nil {
			return err
		}
		req := &coap.Message{Type: coap.Confirmable, Code: coap.GET}
		req.Options = req.Options.Insert(coap.ProxyURI, []byte(uri))
		return observe(ctx, req, false, fn)
	}
}

// UserPropertyCF is the MQTT v5 user property carrying the CoAP content
// format number, next to the content type property (its media type).
const UserPropertyCF = "coap-cf"

// Stats are the Bridge's counters.
type Stats struct {
	Connects      uint64 // successful CONNACKs
	Notifications uint64 // CoAP representations queued for publishing
	Published     uint64 // acknowledged by the broker (PUBACK)
	Rejected      uint64 // PUBACK with an error reason code: not retried
	Dropped       uint64 // oldest representations dropped from a full queue
	Queued        uint64 // waiting for a PUBACK now
	ObserveErrors uint64 // observations that failed or ended, and non-2.05 or partial representations
	TooLarge      uint64 // representations over the host's max_body: not published
	Received      uint64 // MQTT messages of the down direction
	Delivered     uint64 // PUT answered 2.xx
	Failed        uint64 // PUT answered otherwise or not at all (after retries)
}

// Bridge connects the configured mappings. Run does the work.
type Bridge struct {
	cfg     Config
	do      DoFunc
	observe ObserveFunc
	log     *slog.Logger
	q       *queue
	broker  *url.URL

	mu        sync.Mutex
	cli       *paho.Client  // guarded by mu: the connected client, nil between connections
	connected chan struct{} // guarded by mu: closed when cli is set

	connects, notifications, published, rejected, observeErrors atomic.Uint64
	tooLarge                                                    atomic.Uint64
	received, delivered, failed                                 atomic.Uint64
}

// New returns a Bridge for a valid cfg. observe may be nil when there are
// no up mappings.
func New(cfg Config, do DoFunc, observe ObserveFunc, log *slog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if do == nil && len(cfg.Down) > 0 {
		return nil, errors.New("mqtt: down mappings need a DoFunc")
	}
	if observe == nil && len(cfg.Up) > 0 {
		return nil, errors.New("mqtt: up mappings need an ObserveFunc")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	u, _ := url.Parse(cfg.Broker) // checked by Validate
	return &Bridge{
		cfg: cfg, do: do, observe: observe, log: log, q: newQueue(cfg.QueueSize),
		broker: u, connected: make(chan struct{}),
	}, nil
}

// Stats returns a snapshot of the counters.
func (b *Bridge) Stats() Stats {
	n, dropped := b.q.stats()
	return Stats{
		Connects: b.connects.Load(), Notifications: b.notifications.Load(),
		Published: b.published.Load(), Rejected: b.rejected.Load(), Dropped: dropped,
		Queued: uint64(n), ObserveErrors: b.observeErrors.Load(), TooLarge: b.tooLarge.Load(), Received: b.received.Load(),
		Delivered: b.delivered.Load(), Failed: b.failed.Load(),
	}
}

// Run connects to the broker, reconnecting with backoff, starts the
// observations and publishes until ctx is done. It returns nil then, after
// every goroutine it started has stopped and the connection is closed.
func (b *Bridge) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, m := range b.cfg.Up {
		wg.Go(func() { b.runObservation(ctx, m) })
	}
	wg.Go(func() { b.publishLoop(ctx) })
	b.connectLoop(ctx)
	wg.Wait()
	return nil
}

// backoff doubles from 250 ms to 10 s.
func backoff(ctx context.Context, d *time.Duration) bool {
	if *d == 0 {
		*d = 250 * time.Millisecond
	}
	t := time.NewTimer(*d)
	defer t.Stop()
	*d = min(*d*2, 10*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runObservation observes m's URI until ctx is done, registering again
// with backoff whenever an observation ends (RFC 7641 §3.3.1: the client
// re-registers): the stream broke (gatewayd restarted), or the resource
// stopped being observable or never was, the last message telling why. An
// observation that delivered notifications starts the backoff over; one
// that ends at its first response (not observable, or an Observe hub at
// its limits answering without Observe) is polled, backing off to 10 s.
func (b *Bridge) runObservation(ctx context.Context, m Up) {
	var wait time.Duration
	for {
		var n atomic.Uint64
		err := b.observe(ctx, m.Observe, func(msg *coap.Message) {
			n.Add(1)
			b.notify(m, msg)
		})
		if ctx.Err() != nil {
			return
		}
		if n.Load() > 1 {
			wait = 0
		}
		b.observeErrors.Add(1)
		var tl *blockwise.TooLargeError
		if errors.As(err, &tl) {
			// gatewayd refused the representation whole (RFC 7959
			// transfers are bounded by the plugin's max_body): nothing
			// of it is published.
			b.tooLarge.Add(1)
			b.log.Warn("representation over max_body: not published", "uri", m.Observe, "topic", m.Topic, "size", tl.Size, "max_body", tl.Max)
		} else {
			b.log.Warn("observation ended", "uri", m.Observe, "err", err)
		}
		if !backoff(ctx, &wait) {
			return
		}
	}
}

// notify queues one representation; it runs on the observer's goroutine
// and does not block.
func (b *Bridge) notify(m Up, n *coap.Message) {
	if n == nil || n.Code != coap.Content {
		b.observeErrors.Add(1)
		return
	}
	if blk, ok, err := blockwise.Get(n.Options, coap.Block2); err != nil || ok && (blk.More || blk.Num != 0) {
		// One block of a larger representation (RFC 7959 §2.6): an
		// ObserveFunc that does not fetch the rest. Published, it would
		// pass for the whole; a signature over it could never verify.
		b.observeErrors.Add(1)
		b.log.Warn("partial representation not published", "uri", m.Observe, "bytes", len(n.Payload))
		return
	}
	it := item{topic: m.Topic, payload: append([]byte(nil), n.Payload...), cf: -1, retain: m.Retain}
	if cf, ok := n.Options.Uint(coap.ContentFormat); ok {
		it.cf = int(cf)
		it.contentType, _ = coap.MediaType(uint16(cf))
	}
	b.notifications.Add(1)
	b.q.push(it)
}

// current returns the connected client, waiting for one.
func (b *Bridge) current(ctx context.Context) (*paho.Client, bool) {
	for {
		b.mu.Lock()
		cli, ch := b.cli, b.connected
		b.mu.Unlock()
		if cli != nil {
			return cli, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-ch:
		}
	}
}

// publishLoop publishes the queue's head until it is acknowledged, one at
// a time, so the broker sees each topic's representations in order.
func (b *Bridge) publishLoop(ctx context.Context) {
	for {
		it, ok := b.q.peek()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-b.q.ready:
				continue
			}
		}
		cli, ok := b.current(ctx)
		if !ok {
			return
		}
		p := &paho.Publish{QoS: 1, Topic: it.topic, Payload: it.payload, Retain: it.retain, Properties: &paho.PublishProperties{}}
		if it.cf >= 0 {
			p.Properties.ContentType = it.contentType
			p.Properties.User.Add(UserPropertyCF, strconv.Itoa(it.cf))
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cli.Publish(pctx, p)
		cancel()
		switch {
		case err == nil:
			b.q.done(it.seq)
			b.published.Add(1)
		case resp != nil && resp.ReasonCode >= 0x80:
			// The broker refused it (e.g. not authorised): sending it
			// again would be refused again.
			b.q.done(it.seq)
			b.rejected.Add(1)
			b.log.Warn("publish refused", "topic", it.topic, "reason", resp.ReasonCode)
		default:
			// Connection trouble: keep the item; wait until this client is
			// gone before trying again on the next one.
			select {
			case <-ctx.Done():
				return
			case <-cli.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// connectLoop keeps one connection up until ctx is done.
func (b *Bridge) connectLoop(ctx context.Context) {
	var wait time.Duration
	for ctx.Err() == nil {
		cli, err := b.connect(ctx)
		if err != nil {
			b.log.Warn("connect failed", "broker", b.broker.Redacted(), "err", err)
			if !backoff(ctx, &wait) {
				return
			}
			continue
		}
		wait = 0
		b.connects.Add(1)
		b.mu.Lock()
		b.cli = cli
		close(b.connected)
		b.mu.Unlock()

		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
			select {
			case <-cli.Done():
			case <-dctx.Done():
			}
			cancel()
		case <-cli.Done():
		}
		b.mu.Lock()
		b.cli = nil
		b.connected = make(chan struct{})
		b.mu.Unlock()
		if ctx.Err() == nil {
			b.log.Info("connection lost; reconnecting", "broker", b.broker.Redacted())
			if !backoff(ctx, &wait) {
				return
			}
		}
	}
}

func (b *Bridge) dial(ctx context.Context) (net.Conn, error) {
	host := b.broker.Host
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	switch b.broker.Scheme {
	case "mqtts", "ssl", "tls":
		if b.broker.Port() == "" {
			host = net.JoinHostPort(b.broker.Hostname(), "8883")
		}
		td := &tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: b.broker.Hostname(), MinVersion: tls.VersionTLS12}}
		return td.DialContext(ctx, "tcp", host)
	}
	if b.broker.Port() == "" {
		host = net.JoinHostPort(b.broker.Hostname(), "1883")
	}
	return d.DialContext(ctx, "tcp", host)
}

// Limits the bridge announces to the broker.
const (
	maxInFlightDown = 16       // unacknowledged QoS 1 messages the broker may send
	maxPacketSize   = 64 << 10 // bytes: larger publications are not delivered to us
)

func (b *Bridge) connect(ctx context.Context) (*paho.Client, error) {
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("mqtt: dial: %w", err)
	}
	cli := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true,
		SendAcksInterval:           50 * time.Millisecond,
		OnPublishReceived:          []func(paho.PublishReceived) (bool, error){b.onPublish(ctx)},
		OnClientError:              func(err error) { b.log.Debug("client error", "err", err) },
		OnServerDisconnect:         func(d *paho.Disconnect) { b.log.Info("broker disconnected us", "reason", d.ReasonCode) },
	})
	expiry := *b.cfg.SessionExpiry
	// Bound what the broker may push at us before we acknowledge (MQTT v5
	// §3.1.2.11.3-4): down messages are handled one at a time, and without
	// these the client would buffer up to 65535 messages of any size.
	receiveMax, maxPacket := uint16(maxInFlightDown), uint32(maxPacketSize)
	cp := &paho.Connect{
		ClientID:   b.cfg.ClientID,
		KeepAlive:  b.cfg.KeepAlive,
		CleanStart: expiry == 0,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &receiveMax, MaximumPacketSize: &maxPacket},
	}
	if b.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = b.cfg.Username, true
	}
	if b.cfg.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(b.cfg.Password), true
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ca, err := cli.Connect(cctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("mqtt: connect: %w", err)
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("mqtt: connect refused: reason %d", ca.ReasonCode)
	}
	if len(b.cfg.Down) > 0 {
		sub := &paho.Subscribe{}
		for _, m := range b.cfg.Down {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: m.Topic, QoS: 1})
		}
		if _, err := cli.Subscribe(cctx, sub); err != nil {
			_ = cli.Disconnect(&paho.Disconnect{})
			<-cli.Done()
			return nil, fmt.Errorf("mqtt: subscribe: %w", err)
		}
	}
	return cli, nil
}

// onPublish handles the down direction: PUT, then acknowledge. It runs on
// the client's routing goroutine, so messages are PUT one at a time in
// the order the broker sent them.
func (b *Bridge) onPublish(ctx context.Context) func(paho.PublishReceived) (bool, error) {
	return func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		b.received.Add(1)
		handled := false
		settled := true
		for _, m := range b.cfg.Down {
			if match(m.Topic, p.Topic) {
				settled = b.put(ctx, m, p)
				handled = true
				break
			}
		}
		if !settled {
			// Stopping before the PUT was answered: no PUBACK, so the
			// broker sends the message again on the next session.
			return handled, nil
		}
		if err := pr.Client.Ack(p); err != nil {
			b.log.Debug("ack failed", "err", err)
		}
		return handled, nil
	}
}

// put PUTs one message and reports whether it is settled: delivered, or
// failed for good. It is not settled when ctx ended first.
func (b *Bridge) put(ctx context.Context, m Down, p *paho.Publish) bool {
	req := &coap.Message{Type: coap.Confirmable, Code: coap.PUT, Payload: p.Payload}
	req.Options = req.Options.Insert(coap.ProxyURI, []byte(m.Put))
	if cf, ok := contentFormat(p.Properties, m.ContentFormat); ok {
		req.Options = req.Options.SetUint(coap.ContentFormat, uint32(cf))
	}
	timeout := time.Duration(b.cfg.PutTimeout) * time.Second
	giveUp := time.Now().Add(timeout)
	var wait time.Duration
	for try := 0; try < 3; {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := b.do(pctx, req, false)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			if resp != nil && resp.Code.Class() == 2 {
				b.delivered.Add(1)
				return true
			}
			if d, ok := retryAfter(resp); ok && time.Now().Add(d).Before(giveUp) {
				// 4.29 and 5.03 say when to try again (RFC 8516 §2, RFC
				// 7252 §5.9.3.4): a pub-sub topic's rate limit or a
				// restarting upstream is no reason to drop a message.
				if !sleep(ctx, d) {
					return false
				}
				continue
			}
			b.failed.Add(1)
			b.log.Warn("put refused", "uri", m.Put, "resp", resp)
			return true
		}
		var ce *coap.Error
		if errors.As(err, &ce) {
			b.log.Warn("put failed", "uri", m.Put, "topic", p.Topic, "bytes", len(p.Payload), "err", err)
			break // an answer, not a transport failure: retrying will not help
		}
		if try++; try < 3 && !backoff(ctx, &wait) {
			return false
		}
	}
	b.failed.Add(1)
	return true
}

// retryAfter is how long a 4.29 or 5.03 response asks to wait: its
// Max-Age, at least 100 ms; 1 s without one.
func retryAfter(resp *coap.Message) (time.Duration, bool) {
	if resp == nil || (resp.Code != coap.TooManyRequests && resp.Code != coap.ServiceUnavailable) {
		return 0, false
	}
	d := time.Second
	if v, ok := resp.Options.Uint(coap.MaxAge); ok {
		d = max(time.Duration(v)*time.Second, 100*time.Millisecond)
	}
	return d, true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// contentFormat finds the CoAP content format of an MQTT message: the
// coap-cf user property, else the content type property, else the
// mapping's default.
func contentFormat(props *paho.PublishProperties, def *uint16) (uint16, bool) {
	if props != nil {
		if v := props.User.Get(UserPropertyCF); v != "" {
			if n, err := strconv.ParseUint(v, 10, 16); err == nil {
				return uint16(n), true
			}
		}
		if props.ContentType != "" {
			if cf, ok := coap.ContentFormatOf(props.ContentType, "", coap.AllowPayloadType); ok {
				return cf, true
			}
		}
	}
	if def != nil {
		return *def, true
	}
	return 0, false
}
