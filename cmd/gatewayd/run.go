package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/internal/service"
	"github.com/opaque-edge/gatewayd/plugins"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// stopGrace bounds a graceful stop after SIGINT/SIGTERM.
const stopGrace = 5 * time.Second

// run is gatewayd without the process: flags, config, wiring, serving
// until ctx is done. A cancelled ctx is a clean stop, not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatewayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration `file` (TOML); without it, a demo runs on loopback")
	check := fs.Bool("check", false, "validate the configuration, and the [[plugin]] files as a start would, and exit")
	checkPlugins := fs.Bool("check-plugins", true, "with -check: verify each [[plugin]]'s file (path, owner, mode, sha256); the unit turns it off, since a plugin that cannot start does not stop gatewayd")
	showVersion := fs.Bool("version", false, "print the version and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to `file` until exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the usage is printed; asking for it is no failure
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
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
	log := slog.New(service.NewLogHandler(stderr, "gatewayd", &slog.HandlerOptions{Level: level}))

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

	demoMode := *configPath == ""
	cfg := bridge.Defaults()
	if !demoMode {
		var err error
		if cfg, err = bridge.Load(*configPath); err != nil {
			return err
		}
	}
	if *check {
		return checkConfig(cfg, demoMode, *checkPlugins, stdout, stderr)
	}

	var keys demoKeys
	if demoMode {
		stateDir, err := os.MkdirTemp("", "gatewayd-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(stateDir)
		if keys, err = makeDemoKeys(stateDir); err != nil {
			return err
		}
		cfg.PubSub.Enabled = true
		cfg.PubSub.StateDir = stateDir
		cfg.Metrics.Listen = "" // the demo leaves the admin port to an installed gatewayd
		cfg.Radio = []radio.Config{{Name: "sim", Driver: "sim", Options: keys.sim}}
		// Reverse routes to the simulated nodes: /node1/... and so on.
		for i := 0; i < sim.DefaultNodes; i++ {
			cfg.Route = append(cfg.Route, bridge.RouteConfig{
				Name:   fmt.Sprintf("node%d", i+1),
				Target: fmt.Sprintf("coap://[%v]", simNodeAddr(i)),
			})
		}
	}
	// Read systemd's variables before anything starts children (plugins),
	// so they do not inherit them.
	notifier, err := service.NewNotifier(service.Options{Logger: log.With("component", "service")})
	if err != nil {
		return err
	}
	activated, err := service.PacketConns()
	if err != nil {
		return err
	}
	if len(activated[service.SocketCoAPS]) > 0 {
		log.Warn("socket-activated coaps sockets are not supported; the dtls:// listeners bind their own")
		for _, pc := range activated[service.SocketCoAPS] {
			pc.Close()
		}
	}
	p, err := bridge.New(ctx, cfg, log, bridge.WithPacketConns(activated[service.SocketCoAP]), bridge.WithVersion(buildVersion()))
	if err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		// Metrics are an aid, not the service: a busy port is logged, not fatal.
		if addr, err := p.ServeAdmin(ctx, cfg.Metrics.Listen); err != nil {
			log.Error("admin endpoint", "err", err)
		} else {
			log.Info("admin endpoint", "component", "metrics", "addr", addr)
		}
	}
	log.Info("gatewayd started", "version", buildVersion())
	if demoMode {
		printBanner(stdout, p.Addrs()[0], p.Radios()[0].Nodes(), keys)
		stopPublisher := startDemoPublisher(ctx, p, log)
		defer stopPublisher()
	}
	return serve(ctx, p, *configPath, notifier, log)
}

// checkConfig is -check on a loaded configuration: its warnings, then
// what a start verifies of each plugin, unless checkPlugins is off.
func checkConfig(cfg bridge.Config, demo, checkPlugins bool, stdout, stderr io.Writer) error {
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "gatewayd: warning:", w)
	}
	if checkPlugins {
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
	if demo {
		fmt.Fprintln(stdout, "configuration ok: the built-in demo defaults, since no -config was given (the installed file: -config /etc/gatewayd/gatewayd.toml)")
		return nil
	}
	fmt.Fprintln(stdout, "configuration ok")
	return nil
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
	wg.Add(2)
	go func() { defer wg.Done(); n.Run(ctx) }()
	go func() { defer wg.Done(); probeLoop(ctx, p, n, hb, log) }()
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

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// simNodeAddr is the address of the demo's i-th simulated node: the sim
// prefix and the IID of the node's MAC address (RFC 4944 §6).
func simNodeAddr(i int) netip.Addr {
	b := sim.DefaultPrefix.Addr().As16()
	iid, _ := sim.NodeExtAddr(i).IID()
	copy(b[8:], iid[:])
	return netip.AddrFrom16(b)
}

func printBanner(w io.Writer, proxy netip.AddrPort, nodes []netip.Addr, keys demoKeys) {
	fmt.Fprintf(w, "\ngatewayd demo: a CoAP proxy on %v in front of a simulated 802.15.4 radio\n", proxy)
	fmt.Fprintf(w, "(a fake OpenThread RCP on a pseudo-terminal, driven through the real Spinel driver)\n")
	fmt.Fprintf(w, "with %d simulated nodes:", len(nodes))
	for _, n := range nodes {
		fmt.Fprintf(w, " %v", n)
	}
	c := "coap-client-notls" // Debian package libcoap3-bin
	fmt.Fprintf(w, `

Try (coap-client-notls is in the Debian package libcoap3-bin):

  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/sensors/temp'
  %[1]s -m put -e open -P coap://%[2]v 'coap://[%[3]v]/actuators/valve'
  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/actuators/valve'
  %[1]s -m get -P coap://%[2]v 'coap://[%[3]v]/.well-known/core'
  %[1]s -m get coap://%[2]v/node1/sensors/temp   # a reverse route
  %[1]s -m get coap://%[2]v/.well-known/core

Node 1 publishes signed readings (COSE_Sign1) to the gateway's pub-sub
broker; find the topic and subscribe for 30 s:

  %[1]s -m get 'coap://%[2]v/.well-known/core?rt=core.ps.data'
  %[1]s -s 30 -m get coap://%[2]v/ps/data/<id from the line above>

End to end, with throwaway keys the nodes and this client hold and the
proxy does not:

  go run ./cmd/gatewayctl get -oscore %[4]s -proxy coap://%[2]v 'coap://[%[3]v]/oscore/temp'
  go run ./cmd/gatewayctl observe -verify %[5]s -proxy coap://%[2]v 'coap://[%[3]v]/signed/temp'

Stop with Ctrl-C.
`, c, proxy, nodes[0], keys.client, keys.pub)
}
