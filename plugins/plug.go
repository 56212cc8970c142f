package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk"
	pb "github.com/opaque-edge/gatewayd/plugins/sdk/proto"
)

// Supervision timing. Variables so that tests can shorten them.
var (
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
	resetAfter   = 30 * time.Second // a plugin that ran this long starts over at minBackoff
	startTimeout = 20 * time.Second // exec to handshake, and Init
	exitPoll     = 50 * time.Millisecond
)

// peerPrefix holds the synthetic addresses of plugins as clients of the
// chain: 100::/64 is the discard-only prefix (RFC 6666), so an address
// from it can never be a real peer, and a response routed to it by mistake
// goes nowhere. Plugin i is 100::(i+1), port 0.
var peerPrefix = netip.MustParsePrefix("100::/64")

func peerAddr(i int) netip.AddrPort {
	a := peerPrefix.Addr().As16()
	a[14], a[15] = byte((i+1)>>8), byte(i+1)
	return netip.AddrPortFrom(netip.AddrFrom16(a), 0)
}

// plug is one configured plugin across its restarts.
type plug struct {
	h    *Host
	cfg  Config
	peer netip.AddrPort
	log  *slog.Logger

	mu      sync.Mutex
	cur     *instance     // guarded by mu; nil while down
	upc     chan struct{} // guarded by mu; closed when an instance comes up
	retryAt time.Time     // guarded by mu; when the next start is due
	lastErr string        // guarded by mu

	starts, restarts, failures, requests, unavail, callbacks atomic.Uint64
	observes, observeSkipped                                 atomic.Uint64
	tooLarge, blockwise                                      atomic.Uint64
	// warns limits gatewayd's own warnings about what the plugin's
	// callbacks asked for (a body over max_body), which its peers can
	// trigger at will.
	warns *logLimiter
	// routed is set once the plugin's schemes are routed to it, at its
	// first start; until then Host.Translator answers for it.
	routed atomic.Bool
	// logs limits go-plugin's log and the plugin's stdout and stderr;
	// crash limits the process's own stderr (what it writes before Serve,
	// a panic's trace), so that a flood of chatter cannot crowd it out.
	logs, crash *logLimiter

	linkMu sync.Mutex
	link   *link // guarded by linkMu: the open radio Link, if any
}

func newPlug(h *Host, c Config, i int) *plug {
	return &plug{
		h: h, cfg: c, peer: peerAddr(i),
		log:   h.log.With("plugin", c.Name),
		upc:   make(chan struct{}),
		logs:  newLogLimiter(time.Now),
		crash: newLogLimiter(time.Now),
		warns: newLogLimiter(time.Now),
	}
}

// instance is one running plugin process.
type instance struct {
	p      *plug
	client *plugin.Client
	pid    int
	init   *pb.InitResponse
	conns  *conns

	ctx    context.Context // ends when the instance is stopped
	cancel context.CancelFunc
	wg     sync.WaitGroup // the instance's goroutines
	fault  chan string    // a goroutine asks for a restart
	once   sync.Once
}

// conns is what the go-plugin client dispenses.
type conns struct {
	cc     *grpc.ClientConn
	broker *plugin.GRPCBroker
	plugin pb.PluginClient
	tr     pb.TranslatorClient
	fe     pb.FrontEndClient
	radio  pb.RadioClient
}

type hostPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (hostPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("plugins: the host end serves nothing")
}

func (hostPlugin) GRPCClient(_ context.Context, b *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return &conns{
		cc: cc, broker: b,
		plugin: pb.NewPluginClient(cc), tr: pb.NewTranslatorClient(cc),
		fe: pb.NewFrontEndClient(cc), radio: pb.NewRadioClient(cc),
	}, nil
}

// start verifies the executable, runs it and initializes it.
func (p *plug) start(ctx context.Context) (inst *instance, err error) {
	defer func() {
		if err != nil {
			p.failures.Add(1)
			p.setErr(err)
		}
	}()
	f, err := openVerified(p.cfg.Path, p.cfg.SHA256)
	if err != nil {
		return nil, fmt.Errorf("plugins: plugin %q: %w", p.cfg.Name, err)
	}
	defer f.Close() // once started, the child has its own reference
	out, errs, crash := p.stdio()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          plugin.PluginSet{sdk.PluginName: hostPlugin{}},
		Cmd:              command(f, p.cfg.Path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true,
		StartTimeout:     startTimeout,
		Logger:           newHCLog(p.log, p.logs),
		// What the plugin writes to os.Stdout and os.Stderr comes over
		// go-plugin's stdio stream (discarded unless these are set) and is
		// logged at the level each line names; the process's own stderr
		// (before Serve, or a crash) comes through Stderr. go-plugin alone
		// logs such lines at Debug, below gatewayd's usual level.
		SyncStdout: out,
		SyncStderr: errs,
		Stderr:     crash,
	})
	var startErr error
	if err := p.h.onStarter(ctx, func() {
		defer func() {
			if r := recover(); r != nil {
				startErr = fmt.Errorf("panic: %v", r)
			}
		}()
		_, startErr = client.Start()
	}); err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugins: plugin %q: start: %w", p.cfg.Name, err)
	}
	if startErr != nil {
		client.Kill()
		return nil, fmt.Errorf("plugins: plugin %q: start %s: %w", p.cfg.Name, p.cfg.Path, startErr)
	}
	inst, err = p.attach(ctx, client)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugins: plugin %q: %w", p.cfg.Name, err)
	}
	p.starts.Add(1)
	p.log.Info("plugin started", "pid", inst.pid, "schemes", inst.init.GetSchemes(),
		"observer", inst.init.GetObserver(), "front_end", inst.init.GetFrontEnd(), "radio", inst.init.GetRadio())
	return inst, nil
}

func (p *plug) attach(ctx context.Context, client *plugin.Client) (*instance, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense: %w", err)
	}
	c, ok := raw.(*conns)
	if !ok {
		return nil, fmt.Errorf("dispense: unexpected %T", raw)
	}
	cfg, err := p.cfg.configJSON()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ictx, cancel := context.WithTimeout(ctx, startTimeout)
	init, err := c.plugin.Init(ictx, &pb.InitRequest{Name: p.cfg.Name, Config: cfg})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	inst := &instance{p: p, client: client, init: init, conns: c, fault: make(chan string, 1)}
	inst.pid, _ = strconv.Atoi(client.ID())
	inst.ctx, inst.cancel = context.WithCancel(p.h.ctx)
	if init.GetFrontEnd() {
		inst.runFrontEnd()
	}
	return inst, nil
}

// runFrontEnd serves the Host callback on the broker and runs the
// plugin's front end against it for the instance's life.
func (inst *instance) runFrontEnd() {
	id := inst.conns.broker.NextId()
	inst.wg.Add(2)
	go func() {
		defer inst.wg.Done()
		// Returns when the broker closes, that is when the client is killed.
		inst.conns.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
			s := sdk.NewGRPCServer(opts)
			pb.RegisterHostServer(s, &hostServer{p: inst.p, life: inst.ctx})
			return s
		})
	}()
	go func() {
		defer inst.wg.Done()
		_, err := inst.conns.fe.Run(inst.ctx, &pb.RunRequest{HostBrokerId: id})
		if inst.ctx.Err() != nil {
			return
		}
		// A front end that stops while its process runs is a fault: the
		// plugin is restarted so that the front end runs again.
		msg := "front end returned"
		if err != nil {
			msg = fmt.Sprintf("front end: %v", err)
		}
		select {
		case inst.fault <- msg:
		default:
		}
	}()
}

// stop ends the instance: its goroutines, then the process (gracefully,
// then killed after 2 s).
func (inst *instance) stop() {
	inst.once.Do(func() {
		inst.cancel()
		inst.client.Kill()
		inst.wg.Wait()
	})
}

// supervise watches the running instance and restarts the plugin when it
// dies, with exponential backoff, until the Host closes. With a nil inst
// (the first start failed) it begins by starting it.
func (p *plug) supervise(inst *instance) {
	defer p.h.wg.Done()
	backoff := minBackoff
	for {
		if inst != nil {
			began := time.Now()
			why := inst.wait()
			p.setDown(inst)
			inst.stop()
			if p.h.ctx.Err() != nil {
				return
			}
			p.restarts.Add(1)
			p.setErr(errors.New(why))
			p.log.Warn("plugin down; restarting", "reason", why, "backoff", backoff)
			if time.Since(began) >= resetAfter {
				backoff = minBackoff
			}
		}
		for {
			p.setRetry(backoff)
			t := time.NewTimer(backoff)
			select {
			case <-p.h.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, maxBackoff)
			var err error
			if inst, err = p.start(p.h.ctx); err == nil {
				break
			}
			if p.h.ctx.Err() != nil {
				return
			}
			p.log.Error("plugin cannot start; gatewayd serves without it and retries", "err", err, "retry_in", backoff)
		}
		if !p.routed.Load() {
			p.h.claimLate(p, inst.init.GetSchemes())
			if inst.init.GetRadio() {
				registerRadio(p)
			}
		} else if s := inst.init.GetSchemes(); !sameSchemes(p, s) {
			p.log.Warn("plugin restarted with other schemes; routing keeps the first ones", "schemes", s)
		}
		p.setUp(inst)
	}
}

// setRetry records when the next start is due, for the Max-Age of 5.03.
func (p *plug) setRetry(after time.Duration) {
	p.mu.Lock()
	p.retryAt = time.Now().Add(after)
	p.mu.Unlock()
}

// wait blocks until the instance's process exits, it reports a fault, or
// the Host closes, and says why.
func (inst *instance) wait() string {
	t := time.NewTicker(exitPoll)
	defer t.Stop()
	for {
		select {
		case <-inst.p.h.ctx.Done():
			return "closing"
		case why := <-inst.fault:
			return why
		case <-t.C:
			if inst.client.Exited() {
				return "process exited"
			}
		}
	}
}

func sameSchemes(p *plug, s []string) bool {
	schemes := *p.h.schemes.Load()
	n := 0
	for _, t := range schemes {
		if t.p == p {
			n++
		}
	}
	if n != len(s) {
		return false
	}
	for _, x := range s {
		if t, ok := schemes[x]; !ok || t.p != p {
			return false
		}
	}
	return true
}

func (p *plug) setUp(inst *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = inst
	close(p.upc)
}

func (p *plug) setDown(inst *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == inst {
		p.cur = nil
		p.upc = make(chan struct{})
		p.retryAt = time.Now().Add(minBackoff)
	}
}

func (p *plug) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err.Error()
}

// shutdown marks the plugin down for good; Close calls it after the
// supervisor stopped the process.
func (p *plug) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = nil
}

// current returns the running instance, or nil and a channel closed when
// one comes up.
func (p *plug) current() (*instance, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur, p.upc
}

// unavailable is the error for a request to a plugin that is down: 5.03
// with Max-Age telling when to try again (RFC 7252 §5.9.3.4).
func (p *plug) unavailable() error {
	p.unavail.Add(1)
	p.mu.Lock()
	wait := time.Until(p.retryAt)
	p.mu.Unlock()
	secs := int(math.Ceil(wait.Seconds()))
	secs = max(secs, 1)
	return &coap.Error{Code: coap.ServiceUnavailable, Diagnostic: "plugin " + p.cfg.Name + " down", MaxAge: secs}
}

func (p *plug) stats() Stats {
	p.mu.Lock()
	s := Stats{Name: p.cfg.Name, Path: p.cfg.Path, Up: p.cur != nil, LastError: p.lastErr, Peer: p.peer}
	if p.cur != nil {
		s.PID = p.cur.pid
	} else {
		s.RetryAt = p.retryAt
	}
	p.mu.Unlock()
	s.Starts = p.starts.Load()
	s.Restarts = p.restarts.Load()
	s.Failures = p.failures.Load()
	s.Requests = p.requests.Load()
	s.Unavail = p.unavail.Load()
	s.Callbacks = p.callbacks.Load()
	s.Observes = p.observes.Load()
	s.ObserveSkipped = p.observeSkipped.Load()
	s.TooLarge = p.tooLarge.Load()
	s.Blockwise = p.blockwise.Load()
	s.LogDropped = p.logs.dropped.Load() + p.crash.dropped.Load()
	return s
}

// stdio returns the writers of the plugin's stdout and stderr (through
// go-plugin's stream) and of its process's own stderr.
func (p *plug) stdio() (out, errs, crash *stderrLog) {
	return &stderrLog{log: p.log.With("stream", "stdout"), lim: p.logs},
		&stderrLog{log: p.log.With("stream", "stderr"), lim: p.logs},
		&stderrLog{log: p.log.With("stream", "stderr"), lim: p.crash}
}

// newHCLog sends go-plugin's log, and with it each line the plugin writes
// to stderr, to log.
func newHCLog(log *slog.Logger, lim *logLimiter) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        "plugin",
		Level:       hclog.Info,
		Output:      &logWriter{log: log, lim: lim},
		DisableTime: true,
	})
}

// stderrLog logs a plugin's stderr lines at the level each names: slog's
// "level=WARN", or a "[WARN]" prefix; Info otherwise. hclog JSON lines are
// left to go-plugin, which logs them at their level through newHCLog.
type stderrLog struct {
	log *slog.Logger
	lim *logLimiter
	mu  sync.Mutex
	buf []byte // guarded by mu: a partial line
}

// maxLogLine clips what one plugin line puts into gatewayd's log.
const maxLogLine = 1024

func (w *stderrLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			if room := maxLogLine + 1 - len(w.buf); room > 0 {
				w.buf = append(w.buf, rest[:min(len(rest), room)]...)
			}
			break
		}
		if room := maxLogLine + 1 - len(w.buf); room > 0 {
			w.buf = append(w.buf, rest[:min(i, room)]...)
		}
		w.line(string(w.buf))
		w.buf = w.buf[:0]
		rest = rest[i+1:]
	}
	return len(b), nil
}

func (w *stderrLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	if s == "" || strings.HasPrefix(s, "{") || !w.lim.pass(w.log) {
		return
	}
	if len(s) > maxLogLine {
		s = s[:maxLogLine] + "…"
	}
	level := slog.LevelInfo
	switch {
	case strings.Contains(s, "level=ERROR"), strings.HasPrefix(s, "[ERROR]"),
		strings.HasPrefix(s, "panic: "), strings.HasPrefix(s, "fatal error: "):
		level = slog.LevelError
	case strings.Contains(s, "level=WARN"), strings.HasPrefix(s, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(s, "level=DEBUG"), strings.HasPrefix(s, "[DEBUG]"), strings.HasPrefix(s, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, "plugin output", "line", strings.ToValidUTF8(s, "?"))
}

// logWriter turns hclog's lines into slog records, clipped.
type logWriter struct {
	log *slog.Logger
	lim *logLimiter
}

func (w *logWriter) Write(b []byte) (int, error) {
	if !w.lim.pass(w.log) {
		return len(b), nil
	}
	s := strings.TrimRight(string(b), "\n")
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	level := slog.LevelInfo
	switch {
	case strings.Contains(s, "[ERROR]"):
		level = slog.LevelError
	case strings.Contains(s, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(s, "[DEBUG]"), strings.Contains(s, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, "plugin log", "line", strings.ToValidUTF8(s, "?"))
	return len(b), nil
}
