package spinel

import "go.bug.st/serial"

// NewWrapped is New with every port the driver opens passed through wrap,
// so tests can make a real port misbehave.
func NewWrapped(cfg Config, wrap func(serial.Port) serial.Port) (*Driver, error) {
	return newDriver(cfg, func(fds *fdReserve) (serial.Port, error) {
		p, err := openPort(cfg.Device, cfg.Baud, fds)
		if err != nil {
			return nil, err
		}
		return wrap(p), nil
	})
}
