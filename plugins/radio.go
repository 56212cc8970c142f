package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/plugins/internal/wire"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
	"github.com/opaque-edge/gatewayd/radio"
)

// RadioDriver is the radio driver name of a radio plugin:
// `driver = "plugin:<name>"` in a [[radio]] table.
func RadioDriver(plugin string) string { return "plugin:" + plugin }

// radio.Register is process-wide and forever, while Hosts come and go (a
// reload, tests): each driver name is registered once and looks up the
// plugin of that name in the Host running now.
var radios struct {
	mu         sync.Mutex
	registered map[string]bool  // guarded by mu
	active     map[string]*plug // guarded by mu
}

func registerRadio(p *plug) {
	radios.mu.Lock()
	defer radios.mu.Unlock()
	if radios.registered == nil {
		radios.registered = map[string]bool{}
		radios.active = map[string]*plug{}
	}
	name := p.cfg.Name
	radios.active[name] = p
	if !radios.registered[name] {
		radios.registered[name] = true
		radio.Register(RadioDriver(name), radio.Driver{Open: func(ctx context.Context, cfg radio.Config, log *slog.Logger) (radio.Link, error) {
			return openRadio(name, cfg)
		}})
	}
}

func unregisterRadio(p *plug) {
	radios.mu.Lock()
	defer radios.mu.Unlock()
	if radios.active[p.cfg.Name] == p {
		delete(radios.active, p.cfg.Name)
	}
}

func openRadio(name string, cfg radio.Config) (radio.Link, error) {
	radios.mu.Lock()
	p := radios.active[name]
	radios.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("plugins: no running radio plugin %q", name)
	}
	return p.openLink(cfg.Channel, cfg.PANID)
}

// Radio returns a new Link to the radio of the named plugin, configured
// with channel and panID (zero: leave the plugin's own). There is at most
// one open Link per plugin; radio.Open gets it through the
// "plugin:<name>" driver.
func (h *Host) Radio(name string, channel uint8, panID uint16) (radio.Link, error) {
	for _, p := range h.plugins {
		if p.cfg.Name == name {
			return p.openLink(channel, panID)
		}
	}
	return nil, fmt.Errorf("plugins: no plugin %q", name)
}

// rxQueue bounds the frames a Link holds for a slow reader.
const rxQueue = 64

func (p *plug) openLink(channel uint8, panID uint16) (*link, error) {
	if inst, _ := p.current(); inst != nil && !inst.init.GetRadio() {
		return nil, fmt.Errorf("plugins: plugin %q has no radio", p.cfg.Name)
	}
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	if p.link != nil {
		return nil, fmt.Errorf("plugins: plugin %q: radio already open", p.cfg.Name)
	}
	l := &link{p: p, channel: channel, panID: panID, rx: make(chan radio.Frame, rxQueue), closed: make(chan struct{})}
	p.link = l
	l.wg.Add(1)
	go l.pump()
	return l, nil
}

// link is a radio.Link to a radio plugin that outlives the plugin's
// restarts: while the plugin is down, Send fails with radio.ErrDown and
// Recv waits.
type link struct {
	p       *plug
	channel uint8
	panID   uint16

	rx     chan radio.Frame
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu   sync.Mutex
	info *pb.RadioInfo // guarded by mu: the running plugin's, nil while down
	inst *instance     // guarded by mu: the instance info came from

	rxDropped, reconnects atomic.Uint64
}

var (
	_ radio.Link                = (*link)(nil)
	_ radio.UpReporter          = (*link)(nil)
	_ radio.UpWaiter            = (*link)(nil)
	_ radio.ExtAddrReporter     = (*link)(nil)
	_ radio.LinkCounterReporter = (*link)(nil)
)

func (l *link) Send(ctx context.Context, mpdu []byte) (err error) {
	defer recoverErr(&err, l.p, "radio send")
	if len(mpdu) > 125 {
		return radio.ErrTooLong
	}
	select {
	case <-l.closed:
		return radio.ErrClosed
	default:
	}
	inst, _ := l.p.current()
	if inst == nil {
		return fmt.Errorf("plugins: %s: %w", l.p.cfg.Name, radio.ErrDown)
	}
	r, err := inst.conns.radio.Send(ctx, &pb.SendRequest{Mpdu: mpdu})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if goneUnderCall(err) {
			return fmt.Errorf("plugins: %s: %w: %w", l.p.cfg.Name, radio.ErrDown, err)
		}
		return fmt.Errorf("%w: %s: radio send: %w", ErrPlugin, l.p.cfg.Name, err)
	}
	return wire.LinkError(r.GetError(), r.GetText())
}

func (l *link) Recv(ctx context.Context) (radio.Frame, error) {
	select {
	case f := <-l.rx:
		return f, nil
	case <-ctx.Done():
		return radio.Frame{}, ctx.Err()
	case <-l.closed:
		return radio.Frame{}, radio.ErrClosed
	}
}

// Close stops the Link; the plugin keeps running.
func (l *link) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.wg.Wait()
		l.p.linkMu.Lock()
		if l.p.link == l {
			l.p.link = nil
		}
		l.p.linkMu.Unlock()
	})
	return nil
}

func (l *link) Up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info != nil && l.info.GetUp()
}

func (l *link) WaitUp(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !l.Up() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.closed:
			return radio.ErrClosed
		case <-t.C:
		}
	}
	return nil
}

func (l *link) ExtAddr() [8]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var e [8]byte
	if l.info != nil && len(l.info.GetExtAddr()) == 8 {
		copy(e[:], l.info.GetExtAddr())
	}
	return e
}

func (l *link) LinkCounters() radio.LinkCounters {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := radio.LinkCounters{RxDropped: l.rxDropped.Load(), Reconnects: l.reconnects.Load()}
	if i := l.info; i != nil {
		c.TxFrames, c.TxErrors, c.RxFrames = i.GetTxFrames(), i.GetTxErrors(), i.GetRxFrames()
		c.RxDropped += i.GetRxDropped()
		c.Reconnects += i.GetReconnects()
		c.LastError = i.GetLastError()
	}
	return c
}

// infoEvery is how often the Link refreshes the plugin's radio info.
const infoEvery = time.Second

// pump follows the plugin across restarts: for each running instance it
// configures the radio, then forwards its frames into rx and refreshes
// its info until the instance ends or the Link closes.
func (l *link) pump() {
	defer l.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			l.p.log.Error("panic in radio pump", "panic", r)
		}
	}()
	var last *instance
	for {
		inst, upc := l.p.current()
		switch {
		case inst == nil:
			l.setInfo(nil, nil)
			select {
			case <-l.closed:
				return
			case <-upc:
			}
			continue
		case inst == last:
			// The stream of the running instance ended (its radio
			// failed, say): try again shortly.
			select {
			case <-l.closed:
				return
			case <-time.After(100 * time.Millisecond):
			}
		case last != nil:
			l.reconnects.Add(1)
		}
		last = inst
		l.serve(inst)
		select {
		case <-l.closed:
			return
		default:
		}
	}
}

// serve runs one instance's radio until its stream ends.
func (l *link) serve(inst *instance) {
	ctx, cancel := context.WithCancel(inst.ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-stop:
		}
	}()
	if l.channel != 0 || l.panID != 0 {
		r, err := inst.conns.radio.Configure(ctx, &pb.RadioParams{Channel: uint32(l.channel), PanId: uint32(l.panID)})
		switch {
		case err != nil:
			l.p.log.Warn("radio configure failed", "err", err)
		case r.GetFailure() != nil:
			l.p.log.Warn("radio configure failed", "err", wire.Error(r.GetFailure()))
		case !r.GetSupported():
			l.p.log.Info("radio plugin does not take channel and pan_id; it uses its own")
		}
	}
	stream, err := inst.conns.radio.Recv(ctx, &pb.Empty{})
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.refreshInfo(ctx, inst)
	}()
	defer wg.Wait()
	defer cancel()
	for {
		f, err := stream.Recv()
		if err != nil {
			return
		}
		data := f.GetData()
		if len(data) == 0 || len(data) > 127 {
			continue // no MPDU: the plugin's fault; not worth ending the stream
		}
		fr := radio.Frame{Data: data, RSSI: clampRSSI(f.GetRssi()), LQI: uint8(min(f.GetLqi(), 255))}
		select {
		case l.rx <- fr:
		default:
			l.rxDropped.Add(1)
		}
	}
}

func clampRSSI(v int32) int8 {
	return int8(max(-128, min(v, 127)))
}

func (l *link) refreshInfo(ctx context.Context, inst *instance) {
	t := time.NewTicker(infoEvery)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, infoEvery)
		info, err := inst.conns.radio.Info(ictx, &pb.Empty{})
		cancel()
		if err == nil {
			l.setInfo(inst, info)
		} else if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			l.setInfo(nil, nil)
		}
		select {
		case <-ctx.Done():
			l.setInfo(nil, nil)
			return
		case <-t.C:
		}
	}
}

func (l *link) setInfo(inst *instance, info *pb.RadioInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inst, l.info = inst, info
}
