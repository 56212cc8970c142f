package spinel

import "go.bug.st/serial"

// NewWrapped is New with every port the driver opens passed through wrap,
// so tests can make a real port misbehave.
func NewWrapped(cfg Config, wrap func(serial.Port) serial.Port) (*Driver, error) {
	return newDriver(cfg, wrap, nil)
}

// NewWithFlowControl is New with setFlow turning on RTS/CTS flow control
// instead of the termios call, so tests can have a device refuse it.
func NewWithFlowControl(cfg Config, setFlow func(serial.Port) error) (*Driver, error) {
	return newDriver(cfg, nil, setFlow)
}
