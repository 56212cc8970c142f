package spinel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"

	"github.com/opaque-edge/gatewayd/radio"
)

// maxTID is the largest transaction ID; the host uses 1–15 (§2.1.3).
const maxTID = 15

// writeStall is how long closing a session waits for a Write in progress
// before it closes the port under it, and again for the Write to return.
const writeStall = time.Second

// Errors the driver reports as the cause of a reconnect (see Stats.LastError)
// or from bring-up.
var (
	ErrTimeout         = errors.New("spinel: no reply in time")
	ErrUnexpectedReset = errors.New("spinel: unexpected reset")
	ErrIncompatible    = errors.New("spinel: incompatible rcp")
	ErrUnexpectedReply = errors.New("spinel: unexpected reply")
)

// State is the driver's link state.
type State int32

const (
	StateDown State = iota // no usable RCP; Send fails with radio.ErrDown
	StateUp                // brought up; frames flow
)

func (s State) String() string {
	if s == StateUp {
		return "up"
	}
	return "down"
}

// Stats is a snapshot of the driver's counters.
type Stats struct {
	State        State
	TxFrames     uint64 // transmits the RCP reported done with STATUS_OK
	TxErrors     uint64 // transmits that failed: no ack, CCA, timeout, link loss
	RxFrames     uint64 // received frames queued for Recv
	RxDropped    uint64 // received frames dropped because the Recv queue was full
	RxErrors     uint64 // received frames the RCP flagged with a receive error
	BadFCS       uint64 // HDLC-lite frames dropped for a bad FCS
	DecodeErrors uint64 // oversize or aborted HDLC frames, undecodable Spinel frames
	LateReplies  uint64 // replies with a TID no caller waits for (it gave up, or a duplicate); dropped
	Retries      uint64 // failed open or bring-up attempts
	Reconnects   uint64 // times the link came back up after being lost
	LastError    string // why the link last went down or failed to come up
}

// Info describes the RCP found at the last bring-up.
type Info struct {
	ProtocolMajor, ProtocolMinor uint32
	NCPVersion                   string
	RCPAPIVersion                uint32 // 0 if the RCP does not report one
	HWAddr                       [8]byte
	ExtAddr                      [8]byte // EUI-64, canonical (big-endian) order, as set in PROP_MAC_15_4_LADDR
	Caps                         []uint32
}

// Driver is a radio.Link to an OpenThread RCP on a serial port. It owns one
// supervisor goroutine, which opens the port, runs the bring-up and, on any
// failure, closes the port and starts again with exponential backoff; and,
// per open port, one reader and one writer goroutine.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	open   func(*fdReserve) (serial.Port, error) // openPort on cfg.Device, then flow control; tests wrap it
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	once   sync.Once
	wg     sync.WaitGroup

	rx    chan radio.Frame // bounded by cfg.RxQueue
	txSem chan struct{}    // cfg.MaxTxInFlight transmit slots

	state                                      atomic.Int32
	txFrames, txErrors, rxFrames, rxDropped    atomic.Uint64
	rxErrors, badFCS, decodeErrs, retries, rec atomic.Uint64
	lateReplies                                atomic.Uint64
	flowWarned                                 atomic.Bool // the "no rts/cts" warning was logged

	mu      sync.Mutex
	sess    *session      // guarded by mu; non-nil only while up
	upCh    chan struct{} // guarded by mu; closed while up
	info    Info          // guarded by mu
	lastErr error         // guarded by mu
}

var _ radio.Link = (*Driver)(nil)

// New validates cfg and starts the driver. It returns at once; the link is
// down until the first bring-up succeeds (see WaitUp), and comes back by
// itself whenever it is lost, until Close.
func New(cfg Config) (*Driver, error) {
	return newDriver(cfg, nil, nil)
}

// newDriver is New with every port passed through wrap after it is opened
// and set up, and with setFlow instead of setRTSCTS; nil means neither.
func newDriver(cfg Config, wrap func(serial.Port) serial.Port, setFlow func(serial.Port) error) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		cfg:    cfg,
		log:    log.With("component", "spinel", "device", cfg.Device),
		cancel: cancel,
		done:   make(chan struct{}),
		rx:     make(chan radio.Frame, cfg.RxQueue),
		txSem:  make(chan struct{}, cfg.MaxTxInFlight),
		upCh:   make(chan struct{}),
	}
	if setFlow == nil {
		setFlow = setRTSCTS
	}
	d.open = func(fds *fdReserve) (serial.Port, error) {
		p, err := openPort(cfg.Device, cfg.Baud, fds)
		if err != nil {
			return nil, err
		}
		if !cfg.DisableRTSCTS {
			if err := setFlow(p); err != nil && !d.flowWarned.Swap(true) {
				// Not a failure: a pty or a USB CDC-ACM device has no
				// RTS/CTS lines and needs none. Once, not per reconnect.
				d.log.Warn("serial port runs without rts/cts flow control", "err", err)
			}
		}
		if wrap != nil {
			p = wrap(p)
		}
		return p, nil
	}
	d.wg.Add(1)
	go d.run(ctx)
	return d, nil
}

// Close stops the driver and waits for its goroutines; the port is closed
// and Send and Recv return radio.ErrClosed. Close is idempotent. A serial
// Write that does not return holds it up for about 2×writeStall at most
// (see session.close).
func (d *Driver) Close() error {
	d.once.Do(func() {
		close(d.done)
		d.cancel()
	})
	d.wg.Wait()
	return nil
}

// State reports whether the link is up.
func (d *Driver) State() State { return State(d.state.Load()) }

// WaitUp blocks until the link is up, ctx is done or the driver is closed.
func (d *Driver) WaitUp(ctx context.Context) error {
	d.mu.Lock()
	ch := d.upCh
	d.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return radio.ErrClosed
	}
}

// Info returns what the last bring-up learned about the RCP.
func (d *Driver) Info() Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.info
	i.Caps = slices.Clone(i.Caps)
	return i
}

// Stats returns a snapshot of the counters.
func (d *Driver) Stats() Stats {
	s := Stats{
		State:    d.State(),
		TxFrames: d.txFrames.Load(), TxErrors: d.txErrors.Load(),
		RxFrames: d.rxFrames.Load(), RxDropped: d.rxDropped.Load(), RxErrors: d.rxErrors.Load(),
		BadFCS: d.badFCS.Load(), DecodeErrors: d.decodeErrs.Load(), LateReplies: d.lateReplies.Load(),
		Retries: d.retries.Load(), Reconnects: d.rec.Load(),
	}
	d.mu.Lock()
	if d.lastErr != nil {
		s.LastError = d.lastErr.Error()
	}
	d.mu.Unlock()
	return s
}

// Send transmits mpdu (without FCS) with CSMA-CA and MAC retries and waits
// for the RCP's tx-done. It fails fast with radio.ErrDown while the link is
// down, and returns radio.ErrNoAck or radio.ErrChannelBusy (wrapped) when
// the RCP reports STATUS_NO_ACK or STATUS_CCA_FAILURE.
func (d *Driver) Send(ctx context.Context, mpdu []byte) error {
	if len(mpdu) > MaxPSDU-2 {
		return fmt.Errorf("spinel: send %d bytes: %w", len(mpdu), radio.ErrTooLong)
	}
	select {
	case <-d.done:
		return radio.ErrClosed
	default:
	}
	s := d.current()
	if s == nil {
		return fmt.Errorf("spinel: send: %w", radio.ErrDown)
	}
	select {
	case d.txSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.dead:
		return d.downErr(s)
	}
	release := func() { <-d.txSem }

	psdu := make([]byte, len(mpdu)+2, len(mpdu)+2) // the last two are the FCS the radio computes
	copy(psdu, mpdu)
	req := TxRequest{
		PSDU: psdu, Channel: d.cfg.Channel,
		MaxCSMABackoffs: d.cfg.MaxCSMABackoffs, MaxRetries: d.cfg.MaxRetries, CSMA: !d.cfg.DisableCSMA,
	}
	val, err := req.Append(make([]byte, 0, len(psdu)+8))
	if err != nil {
		release()
		return err
	}
	// The transmit slot is held until the RCP answers this TID (or the
	// session ends), even if ctx ends first: the RCP is still busy with it.
	f, err := s.call(ctx, CmdPropValueSet, PropStreamRaw, val, d.cfg.TxTimeout, release)
	if err != nil {
		d.txErrors.Add(1)
		return err
	}
	if f.Cmd != CmdPropValueIs || f.Prop != PropLastStatus {
		d.txErrors.Add(1)
		return fmt.Errorf("spinel: send: cmd %d prop %d: %w", f.Cmd, f.Prop, ErrUnexpectedReply)
	}
	st, err := ParseStatus(f.Value)
	if err != nil {
		d.txErrors.Add(1)
		return err
	}
	switch st {
	case StatusOK:
		d.txFrames.Add(1)
		return nil
	case StatusNoAck:
		err = radio.ErrNoAck
	case StatusCCAFailure:
		err = radio.ErrChannelBusy
	default:
		err = st
	}
	d.txErrors.Add(1)
	return fmt.Errorf("spinel: send: %w", err)
}

// Recv returns the next received frame (FCS stripped, RSSI and LQI from
// the RCP's metadata). Frames keep arriving in order across reconnects.
func (d *Driver) Recv(ctx context.Context) (radio.Frame, error) {
	select {
	case f := <-d.rx:
		return f, nil
	default:
	}
	select {
	case f := <-d.rx:
		return f, nil
	case <-ctx.Done():
		return radio.Frame{}, ctx.Err()
	case <-d.done:
		return radio.Frame{}, radio.ErrClosed
	}
}

func (d *Driver) current() *session {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sess
}

func (d *Driver) downErr(s *session) error {
	select {
	case <-d.done:
		return radio.ErrClosed
	default:
	}
	return fmt.Errorf("spinel: %w: %v", radio.ErrDown, s.cause())
}

// run is the supervisor: connect, serve, and reconnect with backoff.
//
// The delay before the next attempt:
//   - after a link that stayed up for BackoffMax or longer: BackoffMin, and
//     the backoff starts over;
//   - after a link lost sooner, or an attempt that failed with the device
//     present: the backoff, which then doubles up to BackoffMax. An RCP
//     that resets in a loop (a crashing firmware, a brown-out when the radio
//     switches on) is thus retried ever more slowly, never in a tight loop;
//   - while the device path does not exist (unplugged): BackoffMin, without
//     backing off. Looking costs one stat(2), and the dongle is taken back
//     within BackoffMin of its return however long it was away.
//
// A failure that repeats the last one is logged at debug, so a radio that
// stays away does not fill the log.
func (d *Driver) run(ctx context.Context) {
	defer d.wg.Done()
	var fds fdReserve
	fds.fill()
	defer fds.release()

	backoff := d.cfg.BackoffMin
	everUp := false
	lastLogged := ""
	for {
		wasUp, upFor, err := d.connect(ctx, &fds, everUp)
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		d.lastErr = err
		d.mu.Unlock()
		delay := backoff
		switch {
		case wasUp && upFor >= d.cfg.BackoffMax:
			everUp = true
			backoff, delay = d.cfg.BackoffMin, d.cfg.BackoffMin
			lastLogged = ""
			d.log.Warn("rcp link lost", "err", err, "up_for", upFor, "retry_in", delay)
		case wasUp:
			everUp = true
			backoff = min(2*backoff, d.cfg.BackoffMax)
			lastLogged = ""
			d.log.Warn("rcp link lost soon after coming up", "err", err, "up_for", upFor, "retry_in", delay)
		default:
			d.retries.Add(1)
			if errors.Is(err, fs.ErrNotExist) {
				delay = d.cfg.BackoffMin
			} else {
				backoff = min(2*backoff, d.cfg.BackoffMax)
			}
			attrs := []any{"err", err, "retry_in", delay}
			if !d.cfg.DisableRTSCTS && errors.Is(err, ErrTimeout) {
				attrs = append(attrs, "hint", "with rtscts on, a UART whose CTS line is not wired lets no write through: set rtscts = false for it")
			}
			// A missing device is a warning, once per error: the radio
			// is not serving. The retries failing the same way are debug.
			level := slog.LevelWarn
			if msg := err.Error(); msg == lastLogged {
				level = slog.LevelDebug
			} else {
				lastLogged = msg
			}
			d.log.Log(ctx, level, "rcp not available", attrs...)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// connect opens the port, brings the RCP up and serves until the session
// fails. wasUp reports whether the bring-up succeeded, upFor for how long
// the link was up then.
func (d *Driver) connect(ctx context.Context, fds *fdReserve, everUp bool) (wasUp bool, upFor time.Duration, err error) {
	port, err := d.open(fds)
	if err != nil {
		return false, 0, err
	}
	// Whatever the RCP sent before we opened (a power-on notification, the
	// tail of an old session) is stale.
	_ = port.ResetInputBuffer()
	s := newSession(d, port)
	go s.readLoop()
	go s.writeLoop()
	defer s.close()

	info, err := d.bringUp(ctx, s)
	if err == nil {
		err = s.cause() // a reset right after the last setting undid them
	}
	if err != nil {
		return false, 0, err
	}
	upAt := time.Now()
	d.mu.Lock()
	d.sess, d.info = s, info
	// State first: whoever WaitUp wakes must see Up.
	d.state.Store(int32(StateUp))
	close(d.upCh)
	d.mu.Unlock()
	if everUp {
		d.rec.Add(1)
	}
	d.log.Info("rcp up", "version", info.NCPVersion, "hwaddr", fmt.Sprintf("%x", info.HWAddr))

	select {
	case <-s.dead:
		err = s.cause()
	case <-ctx.Done():
		err = ctx.Err()
	}
	d.state.Store(int32(StateDown))
	d.mu.Lock()
	d.sess = nil
	d.upCh = make(chan struct{})
	d.mu.Unlock()
	return true, time.Since(upAt), err
}

// bringUp runs the sequence OpenThread's RadioSpinel host runs: reset,
// check the protocol and capabilities, then configure the radio.
func (d *Driver) bringUp(ctx context.Context, s *session) (Info, error) {
	var info Info
	// §4.2: CMD_RESET's TID is ignored; the RCP answers with an unsolicited
	// PROP_LAST_STATUS carrying a reset cause (§5.5.1, §6).
	s.drainResets()
	t := time.NewTimer(d.cfg.ResetTimeout)
	defer t.Stop()
	raw, err := Frame{Header: MakeHeader(0, 0), Cmd: CmdReset}.Append(nil)
	if err != nil {
		return info, err
	}
	if err := s.send(ctx, raw, t.C); err != nil {
		return info, err
	}
	select {
	case <-s.resets:
	case <-t.C:
		return info, fmt.Errorf("spinel: reset notification: %w", ErrTimeout)
	case <-s.dead:
		return info, s.cause()
	case <-ctx.Done():
		return info, ctx.Err()
	}

	v, err := s.get(ctx, PropProtocolVersion)
	if err != nil {
		return info, err
	}
	ver, err := ParseUints(v)
	if err != nil || len(ver) < 2 {
		return info, fmt.Errorf("spinel: protocol version %x: %w", v, ErrUnexpectedReply)
	}
	info.ProtocolMajor, info.ProtocolMinor = ver[0], ver[1]
	if ver[0] != ProtocolMajor { // §5.5.2.1: the host MUST NOT go on
		return info, fmt.Errorf("spinel: protocol %d.%d, want major %d: %w", ver[0], ver[1], ProtocolMajor, ErrIncompatible)
	}
	if v, err = s.get(ctx, PropNCPVersion); err != nil {
		return info, err
	}
	info.NCPVersion = ParseUTF8(v)
	if v, err = s.get(ctx, PropHWAddr); err != nil {
		return info, err
	}
	if len(v) < 8 {
		return info, fmt.Errorf("spinel: hwaddr of %d bytes: %w", len(v), ErrUnexpectedReply)
	}
	copy(info.HWAddr[:], v)
	if v, err = s.get(ctx, PropCaps); err != nil {
		return info, err
	}
	if info.Caps, err = ParseUints(v); err != nil {
		return info, fmt.Errorf("spinel: caps: %w", err)
	}
	for _, c := range []uint32{CapConfigRadio, CapMACRaw} {
		if !slices.Contains(info.Caps, c) {
			return info, fmt.Errorf("spinel: rcp lacks capability %d: %w", c, ErrIncompatible)
		}
	}
	if v, err = s.get(ctx, PropRCPAPIVersion); err == nil {
		if api, _, err := ParseUint(v); err == nil {
			info.RCPAPIVersion = api
		}
	} else if !errors.Is(err, StatusPropNotFound) { // older RCPs lack it
		return info, err
	}

	info.ExtAddr = d.cfg.ExtAddr
	if info.ExtAddr == ([8]byte{}) {
		info.ExtAddr = info.HWAddr
	}
	// From here a reset undoes what follows: one the RCP makes on its own
	// (a watchdog, a brown-out as the radio switches on, firmware that
	// crashes in a loop) fails the bring-up instead of leaving the link up
	// on an unconfigured radio.
	s.configured.Store(true)
	le16 := func(x uint16) []byte { return binary.LittleEndian.AppendUint16(nil, x) }
	for _, p := range []struct {
		prop uint32
		val  []byte
	}{
		{PropPHYChan, []byte{d.cfg.Channel}},
		{PropMACPANID, le16(d.cfg.PANID)},     // `S`: little-endian (§3.1)
		{PropMACSAddr, le16(d.cfg.ShortAddr)}, // `S`
		{PropMACLAddr, info.ExtAddr[:]},       // `E`: big-endian EUI-64 (§3.1)
		{PropPHYEnabled, []byte{1}},
		{PropMACRawStreamEnabled, []byte{1}},
	} {
		if err := s.set(ctx, p.prop, p.val); err != nil {
			return info, err
		}
	}
	return info, nil
}

// session is one open port: its reader, its writer and the TID table.
//
// A TID is handed out again only once its last use is over for good: its
// reply came, or its command never reached the writer. A caller that gives
// up leaves its TID orphaned until the reply comes; a session that fails
// hands out no TID it frees (a reply may still be on its way). So a reply
// with a TID always belongs to the TID's current use (§2.1.3: the reply
// carries the command's TID and nothing else tells uses apart). Timers do
// not carry the TID alone: each use of a slot has a generation, and a timer
// of an earlier use (one that fired just as its reply came) finds a newer
// generation and does nothing.
type session struct {
	d    *Driver
	port serial.Port
	// configured: the bring-up has begun setting the radio up, so a reset
	// notification now is a fault: the RCP forgot the settings.
	configured atomic.Bool

	wq    chan []byte   // Spinel frames to writeLoop; unbuffered, so a frame taken is being written
	wdone chan struct{} // closed when writeLoop returns

	tids   chan uint8  // free TIDs
	resets chan Status // reset notifications during bring-up

	// afterFunc is time.AfterFunc; tests replace it to fire a timer at a
	// moment of their choosing.
	afterFunc func(time.Duration, func()) (stop func() bool)

	mu    sync.Mutex
	slots [maxTID + 1]slot // guarded by mu

	dead     chan struct{} // closed by fail
	failOnce sync.Once
	err      error         // set once, before dead is closed
	rdone    chan struct{} // closed when readLoop returns
}

type slotState uint8

const (
	slotFree    slotState = iota
	slotWaiting           // a caller waits on ch
	slotOrphan            // the caller gave up; the reply, when it comes, frees the TID
)

type slot struct {
	state   slotState
	gen     uint32      // uses of this TID so far; the current use is gen
	ch      chan Frame  // capacity 1; empty while the slot is free
	release func()      // run when the TID is freed
	stop    func() bool // stops the orphan timer
}

func newSession(d *Driver, p serial.Port) *session {
	s := &session{
		d: d, port: p,
		wq:     make(chan []byte),
		wdone:  make(chan struct{}),
		tids:   make(chan uint8, maxTID),
		resets: make(chan Status, 1),
		dead:   make(chan struct{}),
		rdone:  make(chan struct{}),
		afterFunc: func(after time.Duration, f func()) func() bool {
			return time.AfterFunc(after, f).Stop
		},
	}
	for tid := uint8(1); tid <= maxTID; tid++ {
		s.tids <- tid
		s.slots[tid].ch = make(chan Frame, 1)
	}
	return s
}

func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.dead)
	})
}

func (s *session) cause() error {
	select {
	case <-s.dead:
		return s.err
	default:
		return nil
	}
}

// close ends the session: wake every waiter, stop the writer, close the
// port (which ends the reader's Read) and wait for the reader.
//
// The writer may be stuck in Write: the RCP stopped reading, a USB adapter
// hung. Closing a descriptor does not wake a write(2) blocked on it, but
// discarding the tty's output queue (tcflush TCOFLUSH) makes room for it.
// If even that does not end the Write, the port is closed under it; the
// wait before keeps that from happening to a writer that has not yet
// entered write(2) and would write to a reused descriptor number. A Write
// still blocked after the close is left behind, logged: its goroutine ends
// when the kernel lets it return, and touches nothing after.
func (s *session) close() {
	s.fail(radio.ErrClosed)
	select {
	case <-s.wdone:
	default:
		_ = s.port.ResetOutputBuffer()
		if !waitFor(s.wdone, writeStall) {
			s.d.log.Warn("serial write stalled; closing the port under it", "waited", writeStall)
		}
	}
	// Output the RCP never read would also hold up the close itself: the
	// kernel lets a tty's last close wait up to closing_wait (30 s by
	// default) for it to drain. Nothing queued is worth that.
	_ = s.port.ResetOutputBuffer()
	s.port.Close()
	if !waitFor(s.wdone, writeStall) {
		s.d.log.Error("serial write still blocked after close; leaving it", "waited", writeStall)
	}
	<-s.rdone
	s.mu.Lock()
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.state == slotOrphan {
			sl.stop()
			s.freeLocked(uint8(i))
		}
	}
	s.mu.Unlock()
}

// waitFor reports whether ch closed within d.
func waitFor(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// freeLocked ends the current use of tid and, while the session lives,
// returns tid to the pool. s.mu must be held.
func (s *session) freeLocked(tid uint8) {
	sl := &s.slots[tid]
	if sl.release != nil {
		sl.release()
	}
	select { // a reply no one took
	case <-sl.ch:
	default:
	}
	*sl = slot{ch: sl.ch, gen: sl.gen}
	if s.cause() == nil {
		s.tids <- tid // never blocks: each TID is in the pool at most once
	}
}

func (s *session) free(tid uint8) {
	s.mu.Lock()
	s.freeLocked(tid)
	s.mu.Unlock()
}

// writeLoop is the port's only writer. Callers hand it frames and wait
// under their own timeouts, so a Write that blocks holds up no caller and
// no Close: the command times out and fails the session.
func (s *session) writeLoop() {
	defer close(s.wdone)
	var buf []byte // bounded by the largest frame sent
	for {
		var raw []byte
		select {
		case raw = <-s.wq:
		case <-s.dead:
			return
		}
		buf = AppendHDLC(buf[:0], raw)
		for b := buf; len(b) > 0; {
			if s.cause() != nil {
				return // the port may be closed by now
			}
			n, err := s.port.Write(b)
			if err == nil && n == 0 {
				err = io.ErrShortWrite
			}
			if err != nil {
				s.fail(fmt.Errorf("spinel: write %s: %w", s.d.cfg.Device, err))
				return
			}
			b = b[n:]
		}
	}
}

// send hands an encoded Spinel frame to the writer. A writer that does not
// take it before expired fires is stalled: the session fails.
func (s *session) send(ctx context.Context, raw []byte, expired <-chan time.Time) error {
	select {
	case s.wq <- raw:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.dead:
		return s.d.downErr(s)
	case <-expired:
		err := fmt.Errorf("spinel: write %s stalled: %w", s.d.cfg.Device, ErrTimeout)
		s.fail(err)
		return err
	}
}

// call sends a command with a fresh TID and waits up to timeout for the
// reply with that TID (§2.1.3); the timeout covers the write too. A
// timeout fails the session: an RCP that stops answering is reset. release,
// if not nil, runs when the TID is freed, which is after the reply even
// when ctx ends first.
func (s *session) call(ctx context.Context, cmd, prop uint32, value []byte, timeout time.Duration, release func()) (Frame, error) {
	var tid uint8
	select {
	case tid = <-s.tids:
	case <-ctx.Done():
		if release != nil {
			release()
		}
		return Frame{}, ctx.Err()
	case <-s.dead:
		if release != nil {
			release()
		}
		return Frame{}, s.d.downErr(s)
	}
	sl := &s.slots[tid]
	s.mu.Lock()
	sl.state, sl.release = slotWaiting, release
	sl.gen++
	gen, ch := sl.gen, sl.ch
	s.mu.Unlock()

	raw, err := Frame{Header: MakeHeader(0, tid), Cmd: cmd, Prop: prop, Value: value}.Append(make([]byte, 0, 16+len(value)))
	if err != nil {
		s.free(tid)
		return Frame{}, fmt.Errorf("spinel: cmd %d prop %d: %w", cmd, prop, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	if err := s.send(ctx, raw, t.C); err != nil {
		s.free(tid) // never written: no reply will come
		return Frame{}, err
	}
	select {
	case f := <-ch:
		s.free(tid)
		return f, nil
	case <-t.C:
		err := fmt.Errorf("spinel: cmd %d prop %d: no reply within %v: %w", cmd, prop, timeout, ErrTimeout)
		s.fail(err) // first, so the TID does not go back to the pool
		s.free(tid)
		return Frame{}, err
	case <-s.dead:
		s.free(tid)
		return Frame{}, s.d.downErr(s)
	case <-ctx.Done():
		s.mu.Lock()
		if len(ch) > 0 || s.cause() != nil { // the reply came as ctx ended, or none can come now
			s.freeLocked(tid)
		} else {
			sl.state = slotOrphan
			sl.stop = s.afterFunc(timeout, func() { s.expire(tid, gen, cmd, prop, timeout) })
		}
		s.mu.Unlock()
		return Frame{}, ctx.Err()
	}
}

// expire runs when the reply to an orphaned TID is overdue. The TID cannot
// be handed out again (a reply may still come and would be taken for the
// next command's), so the session fails and the link is reset: no TID
// stays orphaned for longer than its command's timeout after its caller
// gave up. A timer of an earlier use of the TID does nothing.
func (s *session) expire(tid uint8, gen uint32, cmd, prop uint32, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[tid]
	if sl.state != slotOrphan || sl.gen != gen {
		return // the reply came as the timer fired; the TID has moved on
	}
	s.fail(fmt.Errorf("spinel: cmd %d prop %d (tid %d): no reply within %v after its caller gave up: %w", cmd, prop, tid, timeout, ErrTimeout))
	s.freeLocked(tid)
}

// get reads a property (§4.3); the RCP answers with PROP_VALUE_IS of the
// same property, or of PROP_LAST_STATUS on error.
func (s *session) get(ctx context.Context, prop uint32) ([]byte, error) {
	f, err := s.call(ctx, CmdPropValueGet, prop, nil, s.d.cfg.CommandTimeout, nil)
	if err != nil {
		return nil, err
	}
	return propReply(f, prop)
}

// set writes a property (§4.4); success is the property echoed back (§6).
func (s *session) set(ctx context.Context, prop uint32, val []byte) error {
	f, err := s.call(ctx, CmdPropValueSet, prop, val, s.d.cfg.CommandTimeout, nil)
	if err != nil {
		return err
	}
	_, err = propReply(f, prop)
	return err
}

func propReply(f Frame, prop uint32) ([]byte, error) {
	if f.Cmd == CmdPropValueIs && f.Prop == prop {
		return f.Value, nil
	}
	if f.Cmd == CmdPropValueIs && f.Prop == PropLastStatus {
		st, err := ParseStatus(f.Value)
		if err != nil {
			return nil, err
		}
		if st != StatusOK {
			return nil, fmt.Errorf("spinel: prop %d: %w", prop, st)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("spinel: prop %d: got cmd %d prop %d: %w", prop, f.Cmd, f.Prop, ErrUnexpectedReply)
}

func (s *session) drainResets() {
	for {
		select {
		case <-s.resets:
		default:
			return
		}
	}
}

// readLoop is the port's only reader. A read error (the device unplugged,
// the port closed) ends it and the session.
func (s *session) readLoop() {
	defer close(s.rdone)
	dec := NewDecoder(s.d.cfg.MaxFrame)
	buf := make([]byte, 512)
	var bad, other uint64
	for {
		n, err := s.port.Read(buf)
		if n > 0 {
			dec.Feed(buf[:n], s.dispatch)
			s.d.badFCS.Add(dec.BadFCS - bad)
			s.d.decodeErrs.Add(dec.Oversize + dec.Aborted - other)
			bad, other = dec.BadFCS, dec.Oversize+dec.Aborted
		}
		if err != nil {
			s.fail(fmt.Errorf("spinel: read %s: %w", s.d.cfg.Device, err))
			return
		}
	}
}

// dispatch handles one Spinel frame from the RCP. Nothing here may block.
func (s *session) dispatch(b []byte) {
	f, err := ParseFrame(b)
	if err != nil || f.Header.IID() != 0 {
		s.d.decodeErrs.Add(1)
		return
	}
	if tid := f.Header.TID(); tid != 0 {
		f.Value = slices.Clone(f.Value)
		s.mu.Lock()
		sl := &s.slots[tid]
		switch sl.state {
		case slotWaiting:
			select {
			case sl.ch <- f:
			default: // a second reply to one command: keep the first
				s.d.lateReplies.Add(1)
			}
		case slotOrphan:
			sl.stop() // if it fired already, expire finds the TID moved on
			s.freeLocked(tid)
			s.d.lateReplies.Add(1)
		default:
			s.d.lateReplies.Add(1)
		}
		s.mu.Unlock()
		return
	}
	if f.Cmd != CmdPropValueIs { // INSERTED/REMOVED and others: nothing the RCP host needs
		return
	}
	switch f.Prop {
	case PropLastStatus:
		st, err := ParseStatus(f.Value)
		if err != nil || !st.IsReset() {
			return
		}
		if s.configured.Load() {
			s.fail(fmt.Errorf("spinel: %v: %w", st, ErrUnexpectedReset))
			return
		}
		select {
		case s.resets <- st:
		default:
		}
	case PropStreamRaw:
		s.d.receive(f.Value)
	}
}

func (d *Driver) receive(v []byte) {
	rf, err := ParseRxFrame(v)
	if err != nil || len(rf.PSDU) < 2 {
		d.decodeErrs.Add(1)
		return
	}
	if rf.Error != StatusOK {
		d.rxErrors.Add(1)
		return
	}
	fr := radio.Frame{
		Data: slices.Clone(rf.PSDU[:len(rf.PSDU)-2]), // strip the FCS
		RSSI: rf.RSSI,
		LQI:  rf.LQI,
	}
	if rf.RSSI == -128 { // Spinel's "not present" (§5.6.2.1) is radio's "unknown"
		fr.RSSI = 127
	}
	select {
	case d.rx <- fr:
		d.rxFrames.Add(1)
	default:
		d.rxDropped.Add(1)
	}
}
