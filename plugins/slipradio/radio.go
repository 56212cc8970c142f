package slipradio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"

	"github.com/opaque-edge/gatewayd/plugins/sdk"
	"github.com/opaque-edge/gatewayd/radio"
)

// The slip-radio command set, as Contiki-NG's examples/slip-radio speaks
// it. Every message is one SLIP frame.
//
//	host → radio  "!S" seq attrs mpdu   send; attrs is a packetbuf attribute
//	                                    list (count, then type, value16 each);
//	                                    gatewayd sends none (count 0)
//	radio → host  "!R" seq status tx    the send of seq is done: status is
//	                                    Contiki's MAC_TX_* (0 ok, 1 collision,
//	                                    2 no ack, 3 deferred, 4 error, 5 fatal),
//	                                    tx the transmissions it took
//	host → radio  "?M"                  ask the radio's link-layer address
//	radio → host  "!M" addr[8]          the answer
//	host → radio  "!V" param16 value16  set a radio parameter (Contiki's
//	                                    radio_param_t: 1 channel, 2 PAN ID);
//	                                    there is no answer
//	radio → host  anything else         a received frame, as the radio
//	                                    delivered it: the MPDU without FCS
//
// A received frame may itself begin with '!' (a data frame with ack request
// and no PAN ID compression has FCF byte 0x21): only exact shapes of the
// commands above are taken as commands, which is what Contiki's own border
// router does too.
const (
	txOK        = 0
	txCollision = 1
	txNoAck     = 2
	txDeferred  = 3
	txErr       = 4
	txFatal     = 5

	paramChannel = 1
	paramPANID   = 2
)

// Config is the plugin's [[plugin]] config table.
type Config struct {
	Device string `json:"device"` // serial device, e.g. /dev/ttyACM0 (required)
	Baud   int    `json:"baud"`   // default 115200
	// TxTimeout bounds the wait for "!R" after "!S"; default "1s".
	TxTimeout string `json:"tx_timeout"`
	// Channel and PANID are set with "!V" when gatewayd does not set them
	// from the [[radio]] table; 0 leaves the radio's own.
	Channel uint8  `json:"channel"`
	PANID   uint16 `json:"pan_id"`
}

// ParseConfig reads the JSON config table, defaults applied.
func ParseConfig(b []byte) (Config, time.Duration, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return c, 0, fmt.Errorf("slipradio: config: %w", err)
	}
	if c.Device == "" {
		return c, 0, errors.New("slipradio: config: device is required")
	}
	if c.Baud == 0 {
		c.Baud = 115200
	}
	tx := time.Second
	if c.TxTimeout != "" {
		d, err := time.ParseDuration(c.TxTimeout)
		if err != nil || d <= 0 || d > time.Minute {
			return c, 0, fmt.Errorf("slipradio: config: tx_timeout %q: want a duration up to 1m", c.TxTimeout)
		}
		tx = d
	}
	if c.Channel != 0 && (c.Channel < 11 || c.Channel > 26) {
		return c, 0, fmt.Errorf("slipradio: config: channel %d: want 11 to 26", c.Channel)
	}
	return c, tx, nil
}

// Radio is a slip-radio on a serial port. It reopens the port when it
// fails, every retry interval, until Close.
type Radio struct {
	cfg       Config
	txTimeout time.Duration
	open      func() (io.ReadWriteCloser, error)
	log       *slog.Logger

	rx     chan radio.Frame
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	sendMu sync.Mutex // one send in flight: its seq, its result
	seq    uint8      // guarded by sendMu

	mu      sync.Mutex
	port    io.ReadWriteCloser  // guarded by mu; nil while down
	mac     [8]byte             // guarded by mu
	haveMAC bool                // guarded by mu
	channel uint8               // guarded by mu: what to set after each open
	panID   uint16              // guarded by mu
	waiting map[uint8]chan byte // guarded by mu: sends waiting for "!R"
	lastErr string              // guarded by mu

	txFrames, txErrors, rxFrames, rxDropped, reconnects, slipDrops atomic.Uint64
}

var (
	_ sdk.Radio           = (*Radio)(nil)
	_ sdk.RadioConfigurer = (*Radio)(nil)
)

// retry is how long the Radio waits before reopening a failed port.
var retry = time.Second

// Open starts a Radio on cfg.Device. It does not wait for the device: the
// Radio is down until the port opens and the radio tells its address.
func Open(cfg Config, txTimeout time.Duration, log *slog.Logger) *Radio {
	return openWith(cfg, txTimeout, log, func() (io.ReadWriteCloser, error) {
		return serial.Open(cfg.Device, &serial.Mode{BaudRate: cfg.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	})
}

func openWith(cfg Config, txTimeout time.Duration, log *slog.Logger, open func() (io.ReadWriteCloser, error)) *Radio {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Radio{
		cfg: cfg, txTimeout: txTimeout, open: open, log: log,
		rx: make(chan radio.Frame, 64), closed: make(chan struct{}),
		channel: cfg.Channel, panID: cfg.PANID, waiting: map[uint8]chan byte{},
	}
	r.wg.Add(1)
	go r.run()
	return r
}

// run keeps the port open and reads it.
func (r *Radio) run() {
	defer r.wg.Done()
	first := true
	for {
		p, err := r.open()
		if err == nil {
			if !first {
				r.reconnects.Add(1)
			}
			first = false
			r.serve(p)
		} else {
			r.setErr(fmt.Errorf("slipradio: open %s: %w", r.cfg.Device, err))
		}
		select {
		case <-r.closed:
			return
		case <-time.After(retry):
		}
	}
}

// serve runs one open port until it fails or the Radio closes.
func (r *Radio) serve(p io.ReadWriteCloser) {
	r.mu.Lock()
	r.port = p
	ch, pan := r.channel, r.panID
	r.mu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// Ask for the address until it comes; Close unblocks the reader.
		defer wg.Done()
		r.setParams(ch, pan)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			r.mu.Lock()
			have := r.haveMAC
			r.mu.Unlock()
			if !have {
				r.write([]byte("?M"))
			}
			select {
			case <-stop:
				return
			case <-r.closed:
				p.Close()
				return
			case <-t.C:
			}
		}
	}()
	var d Decoder
	buf := make([]byte, 512)
	for {
		n, err := p.Read(buf)
		if n > 0 {
			d.Feed(buf[:n], r.handle, func(error) { r.slipDrops.Add(1) })
		}
		if err != nil {
			if !r.isClosed() {
				r.setErr(fmt.Errorf("slipradio: read %s: %w", r.cfg.Device, err))
			}
			break
		}
		if n == 0 {
			// A tty whose other end is gone reads 0 forever.
			r.setErr(fmt.Errorf("slipradio: read %s: %w", r.cfg.Device, io.EOF))
			break
		}
	}
	close(stop)
	wg.Wait()
	p.Close()
	r.mu.Lock()
	r.port = nil
	r.haveMAC = false
	for seq, c := range r.waiting {
		close(c)
		delete(r.waiting, seq)
	}
	r.mu.Unlock()
}

// handle dispatches one decoded frame; f is only valid during the call.
func (r *Radio) handle(f []byte) {
	switch {
	case len(f) == 5 && f[0] == '!' && f[1] == 'R':
		r.mu.Lock()
		c := r.waiting[f[2]]
		delete(r.waiting, f[2])
		r.mu.Unlock()
		if c != nil {
			c <- f[3]
		}
		return
	case len(f) == 10 && f[0] == '!' && f[1] == 'M':
		r.mu.Lock()
		copy(r.mac[:], f[2:])
		r.haveMAC = true
		r.mu.Unlock()
		return
	case len(f) == 6 && f[0] == '!' && f[1] == 'V':
		return // a parameter report; nothing asks for one
	case len(f) >= 2 && f[0] == 'E':
		r.log.Debug("slip-radio error", "text", string(f[1:min(len(f), 64)]))
		return
	case len(f) < 3 || len(f) > 127:
		r.rxDropped.Add(1) // no MPDU: too short for FCF and sequence number, or too long
		return
	}
	r.rxFrames.Add(1)
	fr := radio.Frame{Data: append([]byte(nil), f...), RSSI: 127}
	select {
	case r.rx <- fr:
	default:
		r.rxDropped.Add(1)
	}
}

func (r *Radio) write(msg []byte) error {
	r.mu.Lock()
	p := r.port
	r.mu.Unlock()
	if p == nil {
		return radio.ErrDown
	}
	if _, err := p.Write(AppendFrame(nil, msg)); err != nil {
		return fmt.Errorf("%w: write %s: %v", radio.ErrDown, r.cfg.Device, err)
	}
	return nil
}

func (r *Radio) setParams(channel uint8, panID uint16) {
	if channel != 0 {
		r.write([]byte{'!', 'V', 0, paramChannel, 0, channel})
	}
	if panID != 0 {
		r.write([]byte{'!', 'V', 0, paramPANID, byte(panID >> 8), byte(panID)})
	}
}

// Configure sets channel and PAN ID now and after every reopen.
func (r *Radio) Configure(ctx context.Context, channel uint8, panID uint16) error {
	if channel != 0 && (channel < 11 || channel > 26) {
		return fmt.Errorf("slipradio: channel %d: want 11 to 26", channel)
	}
	r.mu.Lock()
	if channel != 0 {
		r.channel = channel
	}
	if panID != 0 {
		r.panID = panID
	}
	ch, pan := r.channel, r.panID
	up := r.port != nil
	r.mu.Unlock()
	if up {
		r.setParams(ch, pan)
	}
	return nil
}

// Send sends mpdu with "!S" and waits for its "!R".
func (r *Radio) Send(ctx context.Context, mpdu []byte) error {
	if len(mpdu) > 125 {
		return radio.ErrTooLong
	}
	if r.isClosed() {
		return radio.ErrClosed
	}
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.seq++
	seq := r.seq
	c := make(chan byte, 1)
	r.mu.Lock()
	r.waiting[seq] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, seq)
		r.mu.Unlock()
	}()
	msg := append([]byte{'!', 'S', seq, 0}, mpdu...)
	if err := r.write(msg); err != nil {
		r.txErrors.Add(1)
		return err
	}
	t := time.NewTimer(r.txTimeout)
	defer t.Stop()
	select {
	case st, ok := <-c:
		if !ok {
			r.txErrors.Add(1)
			return fmt.Errorf("slipradio: %w: port lost", radio.ErrDown)
		}
		err := txError(st)
		if err != nil {
			r.txErrors.Add(1)
		} else {
			r.txFrames.Add(1)
		}
		return err
	case <-t.C:
		r.txErrors.Add(1)
		return fmt.Errorf("slipradio: %w: no !R within %v", radio.ErrDown, r.txTimeout)
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closed:
		return radio.ErrClosed
	}
}

func txError(status byte) error {
	switch status {
	case txOK:
		return nil
	case txCollision, txDeferred:
		return radio.ErrChannelBusy
	case txNoAck:
		return radio.ErrNoAck
	case txFatal:
		return fmt.Errorf("slipradio: %w: fatal transmit error", radio.ErrDown)
	}
	return fmt.Errorf("slipradio: transmit error, status %d", status)
}

// Recv returns the next received frame.
func (r *Radio) Recv(ctx context.Context) (radio.Frame, error) {
	select {
	case f := <-r.rx:
		return f, nil
	case <-ctx.Done():
		return radio.Frame{}, ctx.Err()
	case <-r.closed:
		return radio.Frame{}, radio.ErrClosed
	}
}

// Info tells the address, whether the radio is up (port open and address
// known) and the counters.
func (r *Radio) Info(context.Context) (sdk.RadioInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sdk.RadioInfo{
		ExtAddr: r.mac,
		Up:      r.port != nil && r.haveMAC,
		Counters: radio.LinkCounters{
			TxFrames: r.txFrames.Load(), TxErrors: r.txErrors.Load(),
			RxFrames: r.rxFrames.Load(), RxDropped: r.rxDropped.Load(),
			Reconnects: r.reconnects.Load(), LastError: r.lastErr,
		},
	}, nil
}

// Close stops the Radio and closes the port; it is idempotent.
func (r *Radio) Close() error {
	r.once.Do(func() {
		close(r.closed)
		r.mu.Lock()
		if r.port != nil {
			r.port.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return nil
}

func (r *Radio) isClosed() bool {
	select {
	case <-r.closed:
		return true
	default:
		return false
	}
}

func (r *Radio) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err.Error()
	r.mu.Unlock()
	r.log.Warn("slip-radio", "err", err)
}
