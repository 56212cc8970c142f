package sim

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/spinel"
)

// RCPConfig describes the simulated device. The zero value is an
// nRF52840 running OpenThread RCP firmware.
type RCPConfig struct {
	HWAddr        [8]byte  // EUI-64, canonical order; zero means 18:B4:30:00:00:00:00:01
	NCPVersion    string   // PROP_NCP_VERSION
	ProtocolMajor uint32   // default 4
	ProtocolMinor uint32   // default 3
	RCPAPIVersion uint32   // default 11
	Caps          []uint32 // default CONFIG_RADIO, MAC_RAW, 2.4 GHz O-QPSK
	// TxQueue is how many STREAM_RAW transmits may wait while one is on
	// the air; more are answered with STATUS_BUSY. Default 16. (Real
	// OpenThread RCP firmware holds one and answers a second with an error;
	// the driver's default MaxTxInFlight of 1 matches that.)
	TxQueue int
	// WriteTimeout bounds a write to the host; a host that does not read
	// (port closed) loses the bytes, as on a UART. Default 500 ms.
	WriteTimeout time.Duration
}

func (c RCPConfig) withDefaults() RCPConfig {
	if c.HWAddr == ([8]byte{}) {
		c.HWAddr = [8]byte{0x18, 0xB4, 0x30, 0, 0, 0, 0, 1}
	}
	if c.NCPVersion == "" {
		c.NCPVersion = "OPENTHREAD/thread-reference-20230706; NRF52840; Jan  1 2025 00:00:00"
	}
	if c.ProtocolMajor == 0 {
		c.ProtocolMajor, c.ProtocolMinor = spinel.ProtocolMajor, 3
	}
	if c.RCPAPIVersion == 0 {
		c.RCPAPIVersion = 11
	}
	if c.Caps == nil {
		c.Caps = []uint32{24, spinel.CapConfigRadio, spinel.CapMACRaw}
	}
	if c.TxQueue <= 0 {
		c.TxQueue = 16
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 500 * time.Millisecond
	}
	return c
}

// Faults are the misbehaviours an RCP can be told to show. Counts are
// consumed one per frame sent to the host.
type Faults struct {
	DropNext    int           // drop the next n frames to the host
	CorruptNext int           // send the next n frames with a wrong FCS
	Delay       time.Duration // wait this long before every frame to the host
	SplitWrites bool          // write to the host one byte per Write call
	Mute        bool          // ignore everything the host sends
	// TxResult, if not nil, is the outcome of every transmit instead of
	// the medium's: radio.ErrNoAck or radio.ErrChannelBusy (any other
	// error is reported as STATUS_FAILURE).
	TxResult error
	// ResetOnRadioOn makes the RCP reset by itself (a power-on reset
	// notification, its radio state cleared) each time the host enables
	// the raw stream, right after confirming it: a board that browns out
	// when the radio switches on, or firmware that crashes then. While it
	// is set the RCP resets in a loop under any host that sets it up.
	ResetOnRadioOn bool
	// ResetDelay, with ResetOnRadioOn, is how long after that
	// confirmation the reset comes: 0 is at once (while the host is still
	// setting up), more lets the link come up and fail soon after.
	ResetDelay time.Duration
}

// RCPStats counts what an RCP saw.
type RCPStats struct {
	Commands    uint64 // Spinel frames from the host
	Resets      uint64 // CMD_RESET received
	Transmits   uint64 // STREAM_RAW transmits taken
	Delivered   uint64 // received frames sent to the host
	HostBadFCS  uint64 // HDLC frames from the host with a bad FCS
	WriteErrors uint64 // frames the host did not take
	SelfResets  uint64 // resets the RCP made on its own: Reset, ResetOnRadioOn
}

// RCP is a fake OpenThread radio co-processor. Serve runs it on one
// connection at a time; its radio state (channel, addresses, enables)
// lives in the RCP and is cleared by a reset, as on the real device.
type RCP struct {
	cfg RCPConfig
	st  Station // nil without a medium

	mu     sync.Mutex
	faults Faults    // guarded by mu
	host   io.Writer // guarded by mu; the connection being served, or nil
	chan_  uint8     // guarded by mu
	panID  uint16    // guarded by mu
	short  uint16    // guarded by mu
	ext    [8]byte   // guarded by mu
	phyOn  bool      // guarded by mu
	rawOn  bool      // guarded by mu
	wbuf   []byte    // guarded by wmu
	wmu    sync.Mutex

	commands, resets, transmits, delivered, hostBad, writeErrs, selfResets atomic.Uint64
}

// NewRCP returns an RCP joined to medium (which may be nil: then every
// transmit succeeds and nothing is received but what Deliver injects).
func NewRCP(cfg RCPConfig, medium Medium) *RCP {
	r := &RCP{cfg: cfg.withDefaults(), chan_: 11}
	if medium != nil {
		r.st = medium.Join(r.hear)
	}
	return r
}

// Leave detaches the RCP from its medium.
func (r *RCP) Leave() {
	if r.st != nil {
		r.st.Leave()
	}
}

// SetFaults replaces the fault settings.
func (r *RCP) SetFaults(f Faults) {
	r.mu.Lock()
	r.faults = f
	r.mu.Unlock()
}

// Stats returns the RCP's counters.
func (r *RCP) Stats() RCPStats {
	return RCPStats{
		Commands: r.commands.Load(), Resets: r.resets.Load(), Transmits: r.transmits.Load(),
		Delivered: r.delivered.Load(), HostBadFCS: r.hostBad.Load(), WriteErrors: r.writeErrs.Load(),
		SelfResets: r.selfResets.Load(),
	}
}

// Radio reports the radio settings the host made.
func (r *RCP) Radio() (channel uint8, panID, short uint16, ext [8]byte, rawEnabled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chan_, r.panID, r.short, r.ext, r.phyOn && r.rawOn
}

// Serve speaks Spinel over rw until a read from rw fails (close rw to stop
// it). It first sends the power-on reset notification (§5.5.1).
func (r *RCP) Serve(rw io.ReadWriter) error {
	r.mu.Lock()
	r.host = rw
	r.mu.Unlock()

	txq := make(chan txJob, r.cfg.TxQueue)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := range txq {
			r.transmit(j)
		}
	}()
	defer func() {
		close(txq)
		wg.Wait()
		r.mu.Lock()
		r.host = nil
		r.mu.Unlock()
	}()

	r.reset(spinel.StatusResetPowerOn)
	dec := spinel.NewDecoder(0)
	buf := make([]byte, 512)
	var bad uint64
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			dec.Feed(buf[:n], func(b []byte) { r.handle(b, txq) })
			r.hostBad.Add(dec.BadFCS - bad)
			bad = dec.BadFCS
		}
		if err != nil {
			return err
		}
	}
}

// Reset behaves like the device resetting on its own (watchdog, brown-out):
// the radio state is cleared and an unsolicited reset notification with
// cause st (one of the spinel.StatusReset* codes) goes to the host.
func (r *RCP) Reset(st spinel.Status) {
	r.selfResets.Add(1)
	r.reset(st)
}

// Deliver injects a frame as if the radio had received it from the air.
// It reports whether it went to the host (the raw stream must be enabled).
func (r *RCP) Deliver(f radio.Frame) bool { return r.hear(f) }

// InjectBytes writes raw bytes to the host, unframed: line noise.
func (r *RCP) InjectBytes(b []byte) { r.writeHost(b) }

// InjectFrame sends an arbitrary Spinel frame (header, command, payload)
// to the host, HDLC-framed with a correct FCS.
func (r *RCP) InjectFrame(spinelFrame []byte) { r.send(spinelFrame) }

func (r *RCP) reset(st spinel.Status) {
	r.mu.Lock()
	r.phyOn, r.rawOn = false, false
	r.mu.Unlock()
	r.sendProp(0, spinel.PropLastStatus, uintBytes(uint32(st)))
}

type txJob struct {
	tid uint8
	req spinel.TxRequest
}

func (r *RCP) handle(b []byte, txq chan<- txJob) {
	r.mu.Lock()
	mute := r.faults.Mute
	r.mu.Unlock()
	if mute {
		return
	}
	f, err := spinel.ParseFrame(b)
	if err != nil {
		return
	}
	r.commands.Add(1)
	tid := f.Header.TID()
	switch f.Cmd {
	case spinel.CmdReset: // §4.2: the TID is ignored, the answer is unsolicited
		r.resets.Add(1)
		r.reset(spinel.StatusResetSoftware)
	case spinel.CmdNoop:
		r.status(tid, spinel.StatusOK)
	case spinel.CmdPropValueGet:
		r.get(tid, f.Prop)
	case spinel.CmdPropValueSet:
		if f.Prop == spinel.PropStreamRaw {
			r.queueTx(tid, f.Value, txq)
			return
		}
		r.set(tid, f.Prop, f.Value)
	default:
		r.status(tid, spinel.StatusInvalidCommand)
	}
}

func (r *RCP) get(tid uint8, prop uint32) {
	var v []byte
	r.mu.Lock()
	switch prop {
	case spinel.PropProtocolVersion:
		v = append(uintBytes(r.cfg.ProtocolMajor), uintBytes(r.cfg.ProtocolMinor)...)
	case spinel.PropNCPVersion:
		v = append([]byte(r.cfg.NCPVersion), 0)
	case spinel.PropInterfaceType:
		v = uintBytes(3) // Thread
	case spinel.PropCaps:
		for _, c := range r.cfg.Caps {
			v = append(v, uintBytes(c)...)
		}
	case spinel.PropHWAddr:
		v = slices.Clone(r.cfg.HWAddr[:])
	case spinel.PropRCPAPIVersion:
		v = uintBytes(r.cfg.RCPAPIVersion)
	case spinel.PropPHYChan:
		v = []byte{r.chan_}
	case spinel.PropMACPANID:
		v = binary.LittleEndian.AppendUint16(nil, r.panID)
	case spinel.PropMACSAddr:
		v = binary.LittleEndian.AppendUint16(nil, r.short)
	case spinel.PropMACLAddr:
		v = slices.Clone(r.ext[:])
	case spinel.PropPHYEnabled:
		v = []byte{boolByte(r.phyOn)}
	case spinel.PropMACRawStreamEnabled:
		v = []byte{boolByte(r.rawOn)}
	}
	r.mu.Unlock()
	if v == nil {
		r.status(tid, spinel.StatusPropNotFound)
		return
	}
	r.sendProp(tid, prop, v)
}

func (r *RCP) set(tid uint8, prop uint32, v []byte) {
	bad := func() { r.status(tid, spinel.StatusInvalidArgument) }
	r.mu.Lock()
	switch prop {
	case spinel.PropPHYChan:
		if len(v) != 1 || v[0] < 11 || v[0] > 26 {
			r.mu.Unlock()
			bad()
			return
		}
		r.chan_ = v[0]
	case spinel.PropMACPANID, spinel.PropMACSAddr:
		if len(v) != 2 {
			r.mu.Unlock()
			bad()
			return
		}
		if prop == spinel.PropMACPANID {
			r.panID = binary.LittleEndian.Uint16(v)
		} else {
			r.short = binary.LittleEndian.Uint16(v)
		}
	case spinel.PropMACLAddr:
		if len(v) != 8 {
			r.mu.Unlock()
			bad()
			return
		}
		copy(r.ext[:], v)
	case spinel.PropPHYEnabled, spinel.PropMACRawStreamEnabled:
		if len(v) != 1 || v[0] > 1 {
			r.mu.Unlock()
			bad()
			return
		}
		if prop == spinel.PropPHYEnabled {
			r.phyOn = v[0] == 1
		} else {
			r.rawOn = v[0] == 1
		}
	default:
		r.mu.Unlock()
		r.status(tid, spinel.StatusPropNotFound)
		return
	}
	crash := prop == spinel.PropMACRawStreamEnabled && v[0] == 1 && r.faults.ResetOnRadioOn
	delay := r.faults.ResetDelay
	r.mu.Unlock()
	r.sendProp(tid, prop, v) // success is the value echoed back (§6)
	switch {
	case crash && delay <= 0:
		r.Reset(spinel.StatusResetPowerOn)
	case crash:
		time.AfterFunc(delay, func() { r.Reset(spinel.StatusResetPowerOn) })
	}
}

func (r *RCP) queueTx(tid uint8, v []byte, txq chan<- txJob) {
	req, err := spinel.ParseTxRequest(v)
	if err != nil || len(req.PSDU) < 2 {
		r.status(tid, spinel.StatusParseError)
		return
	}
	r.mu.Lock()
	on := r.phyOn
	r.mu.Unlock()
	if !on {
		r.status(tid, spinel.StatusInvalidState)
		return
	}
	req.PSDU = slices.Clone(req.PSDU)
	select {
	case txq <- txJob{tid: tid, req: req}:
	default:
		r.status(tid, spinel.StatusBusy)
	}
}

// transmit sends one frame and answers with the tx-done the way
// OpenThread's RCP does: PROP_VALUE_IS LAST_STATUS with the request's TID,
// the status followed by the frame-pending and header-updated flags.
func (r *RCP) transmit(j txJob) {
	r.transmits.Add(1)
	mpdu := j.req.PSDU[:len(j.req.PSDU)-2]
	r.mu.Lock()
	forced := r.faults.TxResult
	r.mu.Unlock()
	err := forced
	if forced == nil && r.st != nil {
		err = r.st.Transmit(mpdu)
	}
	st := spinel.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, radio.ErrNoAck):
		st = spinel.StatusNoAck
	case errors.Is(err, radio.ErrChannelBusy):
		st = spinel.StatusCCAFailure
	default:
		st = spinel.StatusFailure
	}
	r.sendProp(j.tid, spinel.PropLastStatus, append(uintBytes(uint32(st)), 0, 0))
}

// hear is the RCP's Receiver on the medium. A real RCP acknowledges frames
// addressed to it in hardware; the sim acknowledges everything it passes
// to the host and leaves address filtering to the host.
func (r *RCP) hear(f radio.Frame) bool {
	r.mu.Lock()
	on := r.phyOn && r.rawOn && r.host != nil
	ch := r.chan_
	r.mu.Unlock()
	if !on || len(f.Data) > spinel.MaxPSDU-2 {
		return false
	}
	fcs := ieeeFCS(f.Data)
	rf := spinel.RxFrame{
		PSDU: binary.LittleEndian.AppendUint16(slices.Clone(f.Data), fcs),
		RSSI: f.RSSI, Noise: -100, Channel: ch, LQI: f.LQI,
		Timestamp: uint64(time.Now().UnixMicro()),
	}
	v, err := rf.Append(nil)
	if err != nil {
		return false
	}
	r.delivered.Add(1)
	r.sendProp(0, spinel.PropStreamRaw, v)
	return true
}

func (r *RCP) status(tid uint8, st spinel.Status) {
	r.sendProp(tid, spinel.PropLastStatus, uintBytes(uint32(st)))
}

func (r *RCP) sendProp(tid uint8, prop uint32, v []byte) {
	f := spinel.Frame{Header: spinel.MakeHeader(0, tid), Cmd: spinel.CmdPropValueIs, Prop: prop, Value: v}
	b, err := f.Append(nil)
	if err != nil {
		return
	}
	r.send(b)
}

// send frames one Spinel frame for the host, applying the faults.
func (r *RCP) send(payload []byte) {
	r.mu.Lock()
	f := r.faults
	corrupt := false
	switch {
	case r.faults.DropNext > 0:
		r.faults.DropNext--
		r.mu.Unlock()
		return
	case r.faults.CorruptNext > 0:
		r.faults.CorruptNext--
		corrupt = true
	}
	r.mu.Unlock()
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	fcs := spinel.FCS16(payload)
	if corrupt {
		fcs ^= 0x5A5A
	}
	r.wmu.Lock()
	b := append(r.wbuf[:0], 0x7E)
	b = spinel.AppendEscaped(b, payload)
	b = spinel.AppendEscaped(b, []byte{byte(fcs), byte(fcs >> 8)})
	b = append(b, 0x7E)
	r.wbuf = b
	r.writeLocked(b, f.SplitWrites)
	r.wmu.Unlock()
}

func (r *RCP) writeHost(b []byte) {
	r.mu.Lock()
	split := r.faults.SplitWrites
	r.mu.Unlock()
	r.wmu.Lock()
	r.writeLocked(b, split)
	r.wmu.Unlock()
}

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// writeLocked writes to the current host; r.wmu must be held.
func (r *RCP) writeLocked(b []byte, split bool) {
	r.mu.Lock()
	w := r.host
	r.mu.Unlock()
	if w == nil {
		return
	}
	if d, ok := w.(writeDeadliner); ok {
		_ = d.SetWriteDeadline(time.Now().Add(r.cfg.WriteTimeout))
	}
	step := len(b)
	if split {
		step = 1
	}
	for len(b) > 0 {
		n, err := w.Write(b[:min(step, len(b))])
		if err != nil {
			r.writeErrs.Add(1)
			return
		}
		b = b[n:]
	}
}

func uintBytes(v uint32) []byte {
	b, _ := spinel.AppendUint(nil, v&spinel.MaxUint)
	return b
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// ieeeFCS is the IEEE 802.15.4 FCS (CRC-16/KERMIT: reflected 0x8408, init
// 0, no final XOR), so received PSDUs carry a real FCS like the air does.
func ieeeFCS(p []byte) uint16 {
	var c uint16
	for _, b := range p {
		c ^= uint16(b)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0x8408
			} else {
				c >>= 1
			}
		}
	}
	return c
}
