package spinel

import (
	"context"
	"errors"
	"log/slog"

	"github.com/opaque-edge/gatewayd/radio"
)

func init() { radio.Register("spinel", radio.Driver{Open: open, Validate: validate}) }

// validate checks what the "spinel" driver needs of a [[radio]]: a serial
// device to open.
func validate(c radio.Config) error {
	if c.Device == "" {
		return errors.New(`device is required for driver "spinel"`)
	}
	return nil
}

// open is the "spinel" driver of the radio registry: a Driver on the
// configured serial device. It returns at once; the link comes up by
// itself.
func open(_ context.Context, cfg radio.Config, log *slog.Logger) (radio.Link, error) {
	return New(FromRadioConfig(cfg, log))
}

// FromRadioConfig maps the keys of a `[[radio]]` table to a driver
// Config: device, baud, rtscts (unset: on), channel, pan_id, short_addr
// (none: 0xFFFE) and ext_addr (unset: the RCP's HWADDR).
func FromRadioConfig(cfg radio.Config, log *slog.Logger) Config {
	c := Config{
		Device:        cfg.Device,
		Baud:          cfg.Baud,
		DisableRTSCTS: cfg.RTSCTS != nil && !*cfg.RTSCTS,
		Channel:       cfg.Channel,
		PANID:         cfg.PANID,
		ShortAddr:     0xFFFE,
		Logger:        log,
	}
	if cfg.ShortAddr != nil {
		c.ShortAddr = *cfg.ShortAddr
	}
	if e, ok := cfg.ExtAddr.Extended(); ok {
		c.ExtAddr = e
	}
	return c
}

var (
	_ radio.UpReporter          = (*Driver)(nil)
	_ radio.UpWaiter            = (*Driver)(nil)
	_ radio.ExtAddrReporter     = (*Driver)(nil)
	_ radio.LinkCounterReporter = (*Driver)(nil)
	_ radio.FirmwareReporter    = (*Driver)(nil)
)

// Up reports whether the link is up (State() == StateUp).
func (d *Driver) Up() bool { return d.State() == StateUp }

// ExtAddr returns the extended address in use: the configured one, else
// the RCP's HWADDR once a bring-up has read it; all zero before that.
func (d *Driver) ExtAddr() [8]byte {
	if d.cfg.ExtAddr != ([8]byte{}) {
		return d.cfg.ExtAddr
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info.ExtAddr
}

// LinkCounters maps Stats to the radio package's counters.
func (d *Driver) LinkCounters() radio.LinkCounters {
	s := d.Stats()
	return radio.LinkCounters{
		TxFrames: s.TxFrames, TxErrors: s.TxErrors,
		RxFrames: s.RxFrames, RxDropped: s.RxDropped,
		Reconnects: s.Reconnects, LastError: s.LastError,
	}
}

// Firmware is the RCP's NCP_VERSION as the last bring-up read it; "" before
// one has.
func (d *Driver) Firmware() string { return d.Info().NCPVersion }
