package coap

import (
	"math/rand/v2"
	"time"
)

// Params are the transmission parameters of RFC 7252 §4.8, per transport:
// a radio wants slower timers than a LAN.
type Params struct {
	AckTimeout      time.Duration // ACK_TIMEOUT, default 2 s
	AckRandomFactor float64       // ACK_RANDOM_FACTOR, default 1.5
	MaxRetransmit   int           // MAX_RETRANSMIT, default 4
}

// DefaultParams are the defaults of RFC 7252 §4.8.
var DefaultParams = Params{AckTimeout: 2 * time.Second, AckRandomFactor: 1.5, MaxRetransmit: 4}

func (p Params) withDefaults() Params {
	if p.AckTimeout <= 0 {
		p.AckTimeout = DefaultParams.AckTimeout
	}
	if p.AckRandomFactor < 1 {
		p.AckRandomFactor = DefaultParams.AckRandomFactor
	}
	if p.MaxRetransmit <= 0 {
		p.MaxRetransmit = DefaultParams.MaxRetransmit
	}
	return p
}

// initialTimeout draws the first retransmission timeout uniformly from
// [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR] (§4.2).
func (p Params) initialTimeout() time.Duration {
	span := float64(p.AckTimeout) * (p.AckRandomFactor - 1)
	return p.AckTimeout + time.Duration(rand.Float64()*span)
}

// MaxTransmitWait is MAX_TRANSMIT_WAIT (§4.8.2): how long a sender keeps
// trying before giving up on a CON.
func (p Params) MaxTransmitWait() time.Duration {
	return time.Duration(float64(p.AckTimeout) * float64(int(1)<<(p.MaxRetransmit+1)-1) * p.AckRandomFactor)
}

// ExchangeLifetime is EXCHANGE_LIFETIME (§4.8.2) with MAX_LATENCY 100 s
// and PROCESSING_DELAY = ACK_TIMEOUT.
func (p Params) ExchangeLifetime() time.Duration {
	maxTransmitSpan := time.Duration(float64(p.AckTimeout) * float64(int(1)<<p.MaxRetransmit-1) * p.AckRandomFactor)
	return maxTransmitSpan + 2*100*time.Second + p.AckTimeout
}
