package sim

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
)

// Receiver is called by a Medium for every frame another station puts on
// the air and this one hears. It reports whether the station acknowledges
// the frame, which matters only for frames with the ack-request bit set.
// It must return promptly and must not keep f.Data.
type Receiver func(f radio.Frame) (ack bool)

// Medium is the shared air between the gateway's RCP and simulated nodes.
type Medium interface {
	// Join attaches a station that hears other stations through rx.
	Join(rx Receiver) Station
}

// Station is one radio on a Medium.
type Station interface {
	// Transmit puts an MPDU (without FCS) on the air and reports the
	// outcome as a radio would: nil, radio.ErrNoAck (the ack-request bit
	// was set and no station acknowledged) or radio.ErrChannelBusy.
	Transmit(mpdu []byte) error
	// Leave detaches the station; it hears nothing more.
	Leave()
}

// AirConfig configures an Air.
type AirConfig struct {
	Loss  float64       // probability, 0–1, that a station misses a frame
	Delay time.Duration // air time: Transmit returns after it, receivers hear after it
	RSSI  int8          // reported for every reception; 0 means -60 dBm
	LQI   uint8         // reported for every reception; 0 means 255
	// Fading, in dB, makes each reception's RSSI vary by up to that much
	// either way. With it, or a station's attenuation (SetAttenuation),
	// a reception's RSSI is RSSI less both stations' attenuation plus
	// the fading, and its LQI follows the RSSI (lqiOf), at most LQI.
	Fading float64
	Seed   uint64 // loss and fading pattern; the same seed gives the same
}

// Air is a simple in-memory Medium: one channel, every station hears every
// other, each reception lost independently with probability Loss. Frames
// with the ack-request bit (frame control bit 5) succeed if any station
// that heard them acknowledges; others always succeed.
type Air struct {
	mu       sync.Mutex
	cfg      AirConfig             // guarded by mu
	busy     bool                  // guarded by mu
	rng      *rand.Rand            // guarded by mu
	stations map[*station]struct{} // guarded by mu

	frames, bytes, lost, noAck, busyN atomic.Uint64
}

// AirStats counts what went over an Air.
type AirStats struct {
	Frames uint64 // frames transmitted (not counting those refused as busy)
	Bytes  uint64 // octets of MPDU transmitted
	Lost   uint64 // receptions lost to Loss
	NoAck  uint64 // frames with the ack-request bit that nobody acknowledged
	Busy   uint64 // transmits refused with radio.ErrChannelBusy
}

// Stats returns a snapshot of the counters.
func (a *Air) Stats() AirStats {
	return AirStats{
		Frames: a.frames.Load(), Bytes: a.bytes.Load(), Lost: a.lost.Load(),
		NoAck: a.noAck.Load(), Busy: a.busyN.Load(),
	}
}

var _ Medium = (*Air)(nil)

// NewAir returns an empty Air.
func NewAir(cfg AirConfig) *Air {
	if cfg.RSSI == 0 {
		cfg.RSSI = -60
	}
	if cfg.LQI == 0 {
		cfg.LQI = 255
	}
	return &Air{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		stations: make(map[*station]struct{}),
	}
}

// SetLoss changes the loss probability.
func (a *Air) SetLoss(p float64) {
	a.mu.Lock()
	a.cfg.Loss = p
	a.mu.Unlock()
}

// SetDelay changes the air time.
func (a *Air) SetDelay(d time.Duration) {
	a.mu.Lock()
	a.cfg.Delay = d
	a.mu.Unlock()
}

// SetBusy makes every Transmit fail with radio.ErrChannelBusy, as if CCA
// never found the channel clear.
func (a *Air) SetBusy(busy bool) {
	a.mu.Lock()
	a.busy = busy
	a.mu.Unlock()
}

// Join attaches a station.
func (a *Air) Join(rx Receiver) Station {
	s := &station{air: a, rx: rx}
	a.mu.Lock()
	a.stations[s] = struct{}{}
	a.mu.Unlock()
	return s
}

type station struct {
	air   *Air
	rx    Receiver
	atten float64 // dB; guarded by air.mu
}

// Attenuator is a Station whose path loss can be set: the Stations of
// an Air are.
type Attenuator interface {
	// SetAttenuation sets the station's path loss in dB, taken off the
	// RSSI of every frame it sends or hears.
	SetAttenuation(dB float64)
}

var _ Attenuator = (*station)(nil)

func (s *station) SetAttenuation(dB float64) {
	s.air.mu.Lock()
	s.atten = dB
	s.air.mu.Unlock()
}

// lqiOf maps an RSSI to an LQI as 802.15.4 radios roughly do: 255 at
// -50 dBm and above, falling linearly to 0 at -100 dBm.
func lqiOf(rssi int8) uint8 {
	return uint8(min(max((int(rssi)+100)*255/50, 0), 255))
}

func (s *station) Leave() {
	s.air.mu.Lock()
	delete(s.air.stations, s)
	s.air.mu.Unlock()
}

func (s *station) Transmit(mpdu []byte) error {
	a := s.air
	a.mu.Lock()
	if a.busy {
		a.mu.Unlock()
		a.busyN.Add(1)
		return radio.ErrChannelBusy
	}
	cfg := a.cfg
	type reception struct {
		o    *station
		rssi int8
		lqi  uint8
	}
	var hear []reception
	for o := range a.stations {
		if o == s {
			continue
		}
		if cfg.Loss > 0 && a.rng.Float64() < cfg.Loss {
			a.lost.Add(1)
			continue
		}
		r := reception{o: o, rssi: cfg.RSSI, lqi: cfg.LQI}
		if loss := s.atten + o.atten; loss != 0 || cfg.Fading > 0 {
			dB := float64(cfg.RSSI) - loss
			if cfg.Fading > 0 {
				dB += (a.rng.Float64()*2 - 1) * cfg.Fading
			}
			// 126 at most: 127 is the radio package's "unknown".
			r.rssi = int8(min(max(dB, -127), 126))
			r.lqi = min(cfg.LQI, lqiOf(r.rssi))
		}
		hear = append(hear, r)
	}
	a.mu.Unlock()
	a.frames.Add(1)
	a.bytes.Add(uint64(len(mpdu)))
	if cfg.Delay > 0 {
		time.Sleep(cfg.Delay) // the frame is on the air
	}
	acked := false
	for _, r := range hear {
		f := radio.Frame{Data: slices.Clone(mpdu), RSSI: r.rssi, LQI: r.lqi}
		if r.o.rx(f) {
			acked = true
		}
	}
	if len(mpdu) > 0 && mpdu[0]&0x20 != 0 && !acked {
		a.noAck.Add(1)
		return radio.ErrNoAck
	}
	return nil
}
