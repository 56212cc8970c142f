package spinel

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Driver. The zero value of every field but Device
// means its default (see Defaults); timing fields exist so tests can run the
// recovery paths with short values.
type Config struct {
	Device string // serial device path, opened by this path on every (re)connect
	Baud   int    // default DefaultBaud (460800)
	// DisableRTSCTS opens the port without RTS/CTS hardware flow control.
	// By default the driver turns it on (termios CRTSCTS), as Spinel over
	// a UART needs (a host that cannot hold the RCP off loses frames
	// under load). A device that does not take it (a pty; some USB
	// bridges) runs without, and the driver says so once. A UART whose
	// CTS line is not wired needs it off: with it on, no write completes.
	DisableRTSCTS bool

	Channel uint8  // IEEE 802.15.4 channel, 11–26 (2.4 GHz O-QPSK); default 11
	PANID   uint16 // PROP_MAC_15_4_PANID
	// ShortAddr is the radio's own short address (PROP_MAC_15_4_SADDR).
	// 0xFFFE means "no short address"; note 0 is a valid address.
	ShortAddr uint16
	// ExtAddr overrides the extended address (PROP_MAC_15_4_LADDR). It is an
	// EUI-64 in canonical order, most significant byte first, as Spinel's
	// `E` type carries it (§3.1) and as it is printed; IEEE 802.15.4 frames
	// carry it byte-reversed. All zero means use the RCP's HWADDR.
	ExtAddr [8]byte

	MaxRetries      uint8 // MAC frame retries per Send; default 3
	MaxCSMABackoffs uint8 // default 4
	DisableCSMA     bool  // transmit without CSMA-CA (the default is CSMA on)

	// MaxTxInFlight bounds concurrent STREAM_RAW transmits. OpenThread's
	// RCP holds a single transmit frame and answers a second one with an
	// error while busy, so the default is 1; other Send callers wait.
	// At most 14, so one TID stays free for property commands.
	MaxTxInFlight int

	CommandTimeout time.Duration // reply to a property command; default 2 s
	TxTimeout      time.Duration // tx-done after STREAM_RAW; default 5 s
	ResetTimeout   time.Duration // reset notification after CMD_RESET; default 2 s
	BackoffMin     time.Duration // first reconnect delay, and how often an absent device is looked for; default 100 ms
	BackoffMax     time.Duration // reconnect delay cap, and how long a link must stay up to start the backoff over; default 5 s

	RxQueue  int // received frames buffered for Recv; default 64, newest dropped when full
	MaxFrame int // HDLC-lite frame bound; default DefaultMaxFrame

	Logger *slog.Logger // nil: discard
}

// DefaultBaud is the serial speed unless Config.Baud says otherwise. It
// must match the rate the RCP firmware's UART was built for; a native USB
// CDC-ACM device (the nRF52840 dongle) ignores it.
const DefaultBaud = 460800

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("spinel: invalid config")

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Baud == 0 {
		c.Baud = DefaultBaud
	}
	if c.Channel == 0 {
		c.Channel = 11
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.MaxCSMABackoffs == 0 {
		c.MaxCSMABackoffs = 4
	}
	if c.MaxTxInFlight == 0 {
		c.MaxTxInFlight = 1
	}
	set(&c.CommandTimeout, 2*time.Second)
	set(&c.TxTimeout, 5*time.Second)
	set(&c.ResetTimeout, 2*time.Second)
	set(&c.BackoffMin, 100*time.Millisecond)
	set(&c.BackoffMax, 5*time.Second)
	if c.RxQueue == 0 {
		c.RxQueue = 64
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	return c
}

// Validate reports the first problem with c after defaults are applied.
func (c Config) Validate() error {
	c = c.WithDefaults()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case c.Device == "":
		return bad("device is empty")
	case c.Baud < 0:
		return bad("baud %d", c.Baud)
	case c.Channel < 11 || c.Channel > 26:
		return bad("channel %d outside 11–26", c.Channel)
	case c.MaxTxInFlight < 1 || c.MaxTxInFlight > maxTID-1:
		return bad("max tx in flight %d outside 1–%d", c.MaxTxInFlight, maxTID-1)
	case c.CommandTimeout < 0 || c.TxTimeout < 0 || c.ResetTimeout < 0:
		return bad("negative timeout")
	case c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin:
		return bad("backoff %v–%v", c.BackoffMin, c.BackoffMax)
	case c.RxQueue < 1 || c.RxQueue > 4096:
		return bad("rx queue %d outside 1–4096", c.RxQueue)
	case c.MaxFrame < 300 || c.MaxFrame > 64<<10:
		return bad("max frame %d outside 300–65536", c.MaxFrame)
	}
	return nil
}
