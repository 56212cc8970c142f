package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/console"
	"github.com/opaque-edge/gatewayd/internal/service"
	"github.com/opaque-edge/gatewayd/plugins"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// stopGrace bounds a graceful stop after SIGINT/SIGTERM.
const stopGrace = 5 * time.Second

// defaultConfig is the file read when no -config is given and the build
// has no demo.
const defaultConfig = "/etc/gatewayd/gatewayd.toml"

// demo, when this build has one (demo.go), runs the built-in demo in
// place of a configuration file when no -config is given. The packaged
// daemon is built with -tags nodemo and has none.
var demo func(ctx context.Context, d *daemon, check bool) error

// daemon is what the flags set up, for whichever configuration runs.
type daemon struct {
	log            *slog.Logger
	recent         *console.Recent // what log kept for the console
	stdout, stderr io.Writer
	checkPlugins   bool // with -check: verify the [[plugin]] files too
}

// run is gatewayd without the process: flags, config, wiring, serving
// until ctx is done. A cancelled ctx is a clean stop, not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("gatewayd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configUsage := "configuration `file` (TOML); default " + defaultConfig
	if demo != nil {
		configUsage = "configuration `file` (TOML); without it, a demo runs on loopback"
	}
	configPath := flags.String("config", "", configUsage)
	check := flags.Bool("check", false, "validate the configuration, and the [[plugin]] files as a start would, and exit")
	checkPlugins := flags.Bool("check-plugins", true, "with -check: verify each [[plugin]]'s file (path, owner, mode, sha256); the unit turns it off, since a plugin that cannot start does not stop gatewayd")
	showVersion := flags.Bool("version", false, "print the version and exit")
	logLevel := flags.String("log-level", "info", "debug, info, warn or error")
	cpuProfile := flags.String("cpuprofile", "", "write a CPU profile to `file` until exit")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the usage is printed; asking for it is no failure
		}
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, "gatewayd", buildVersion())
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	// The journal's native protocol when systemd connected stderr to it,
	// text otherwise.
	// The console's "last errors" keeps the warnings and errors on their
	// way to the journal.
	recent := console.NewRecent(0)
	log := slog.New(recent.Handler(service.NewLogHandler(stderr, "gatewayd", &slog.HandlerOptions{Level: level})))

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	d := &daemon{log: log, recent: recent, stdout: stdout, stderr: stderr, checkPlugins: *checkPlugins}
	path := *configPath
	if path == "" {
		if demo != nil {
			return demo(ctx, d, *check)
		}
		path = defaultConfig
	}
	cfg, err := bridge.Load(path)
	if err != nil {
		if *configPath == "" && errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w (no -config was given, and this gatewayd has no built-in demo)", err)
		}
		return err
	}
	if *check {
		if *configPath == "" {
			return d.check(cfg, "configuration ok: "+path+", since no -config was given")
		}
		return d.check(cfg, "configuration ok")
	}
	p, n, err := d.start(ctx, cfg)
	if err != nil {
		return err
	}
	return serve(ctx, p, path, n, log)
}

// check is -check on a loaded configuration: its warnings, then what a
// start verifies of each plugin unless d.checkPlugins is off; ok is what
// to say when all is well.
func (d *daemon) check(cfg bridge.Config, ok string) error {
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(d.stderr, "gatewayd: warning:", w)
	}
	// A token file a start would refuse keeps the admin endpoint closed,
	// not the daemon from starting: a warning, as at the start.
	if f := cfg.Metrics.TokenFile; f != "" && cfg.Metrics.Listen != "" {
		if _, err := console.ReadToken(f); err != nil {
			fmt.Fprintf(d.stderr, "gatewayd: warning: metrics: %v; the admin endpoint will not be served\n", err)
		}
	}
	if d.checkPlugins {
		var errs []error
		for _, pc := range cfg.Plugin {
			if err := plugins.Verify(pc.Defaults()); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	fmt.Fprintln(d.stdout, ok)
	return nil
}

// start starts the proxy for cfg with the sockets systemd passed, and the
// notifier serve keeps systemd informed through.
func (d *daemon) start(ctx context.Context, cfg bridge.Config) (*bridge.Proxy, *service.Notifier, error) {
	// Read systemd's variables before anything starts children (plugins),
	// so they do not inherit them.
	notifier, err := service.NewNotifier(service.Options{Logger: d.log.With("component", "service")})
	if err != nil {
		return nil, nil, err
	}
	inherited, err := service.Sockets()
	if err != nil {
		return nil, nil, err
	}
	p, err := bridge.New(ctx, cfg, d.log, bridge.WithSockets(inherited), bridge.WithVersion(buildVersion()), bridge.WithRecent(d.recent))
	if err != nil {
		return nil, nil, err
	}
	if cfg.Metrics.Listen != "" {
		// Metrics are an aid, not the service: a busy port is logged, not fatal.
		if addr, err := p.ServeAdmin(ctx, cfg.Metrics.Listen); err != nil {
			d.log.Error("admin endpoint", "err", err)
		} else {
			d.log.Info("admin endpoint", "component", "metrics", "addr", addr, "console", consoleURL(cfg, addr))
		}
	}
	d.log.Info("gatewayd started", "version", buildVersion())
	return p, notifier, nil
}

// serve runs the started proxy until ctx is done: systemd readiness and
// status, the watchdog fed by probes of the request path, SIGHUP reloads.
func serve(ctx context.Context, p *bridge.Proxy, configPath string, n *service.Notifier, log *slog.Logger) error {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
	}()
	hb := n.Heartbeat("request path")
	wg.Add(3)
	go func() { defer wg.Done(); n.Run(ctx) }()
	go func() { defer wg.Done(); probeLoop(ctx, p, n, hb, log) }()
	go func() { defer wg.Done(); trimLoop(ctx, log) }()
	n.Ready()
	n.Status(statusLine(p))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
loop:
	for {
		select {
		case <-hup:
			reload(p, configPath, n, log)
		case <-ctx.Done():
			break loop
		}
	}
	log.Info("stopping")
	n.Stopping()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("stop", "err", err)
		}
		return nil
	case <-time.After(stopGrace):
		return errors.New("did not stop within 5 s")
	}
}

// reload re-reads the configuration on SIGHUP; an invalid file keeps the
// running configuration.
func reload(p *bridge.Proxy, configPath string, n *service.Notifier, log *slog.Logger) {
	n.Reloading()
	defer n.Ready()
	if configPath == "" {
		log.Warn("reload: the demo has no configuration file")
		return
	}
	restart, err := p.ReloadFile(configPath)
	if err != nil {
		log.Error("reload refused; the running configuration stays", "err", err)
		n.Status("reload refused: " + err.Error())
		return
	}
	if len(restart) > 0 {
		log.Warn("reloaded; these sections changed and need a restart to apply", "sections", restart)
	} else {
		log.Info("reloaded")
	}
	n.Status(statusLine(p))
}

// probeLoop feeds the watchdog's heartbeat while a probe through the
// socket readers and the chain succeeds, and refreshes STATUS=.
func probeLoop(ctx context.Context, p *bridge.Proxy, n *service.Notifier, hb *service.Heartbeat, log *slog.Logger) {
	defer hb.Stop()
	t := time.NewTicker(n.BeatInterval())
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.Probe(pctx)
		cancel()
		if err == nil {
			hb.Beat()
		} else if ctx.Err() == nil {
			log.Warn("probe of the request path failed", "err", err)
		}
		n.Status(statusLine(p))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// statusLine is the one-line STATUS= for systemctl status.
func statusLine(p *bridge.Proxy) string {
	st := p.Status()
	var b strings.Builder
	fmt.Fprintf(&b, "serving %s", strings.Join(st.Listen, " "))
	for _, r := range p.Radios() {
		state := "up"
		if !r.Up() {
			state = "DOWN, reconnecting"
		}
		fmt.Fprintf(&b, "; radio %s %s", r.Name(), state)
	}
	hs := p.Hub().Stats()
	cs := p.Cache().Stats()
	fmt.Fprintf(&b, "; %d observers; cache %d entries", hs.Observers, cs.Entries)
	return b.String()
}

// consoleURL is where the console of the admin endpoint at addr is, or
// "off".
func consoleURL(cfg bridge.Config, addr string) string {
	if !cfg.Metrics.Console {
		return "off"
	}
	return "http://" + addr + "/"
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
