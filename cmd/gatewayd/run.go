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
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/demo"
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
	check := fs.Bool("check", false, "validate the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to `file` until exit")
	if err := fs.Parse(args); err != nil {
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
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

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
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}

	var origin *coap.Endpoint
	if demoMode {
		var err error
		if origin, cfg, err = startDemo(ctx, cfg); err != nil {
			return err
		}
		defer origin.Close()
	}
	p, err := bridge.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("gatewayd started", "version", buildVersion())
	if demoMode {
		printBanner(stdout, p.Addrs()[0], cfg.Route[len(cfg.Route)-1].Target)
	}
	<-ctx.Done()
	log.Info("stopping")
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

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// startDemo runs the demo origin on 127.0.0.1:5685 (or a free port when
// that is taken) and routes /demo/... to it.
func startDemo(ctx context.Context, cfg bridge.Config) (*coap.Endpoint, bridge.Config, error) {
	u, err := coap.ListenUDP(ctx, "127.0.0.1:5685")
	if err != nil {
		u, err = coap.ListenUDP(ctx, "127.0.0.1:0")
	}
	if err != nil {
		return nil, cfg, fmt.Errorf("demo origin: %w", err)
	}
	e := coap.NewEndpoint(u, coap.EndpointConfig{Handler: demo.NewOrigin()})
	cfg.Route = append(cfg.Route, bridge.RouteConfig{Name: "demo", Target: "coap://" + u.LocalAddr().String()})
	return e, cfg, nil
}

func printBanner(w io.Writer, proxy netip.AddrPort, origin string) {
	fmt.Fprintf(w, `
gatewayd demo: a CoAP proxy on %[1]v with a demo origin behind it.
Try (coap-client-notls is in the Debian package libcoap3-bin):

  coap-client-notls -m get coap://%[1]v/.well-known/core
  coap-client-notls -m get coap://%[1]v/demo/sensors/temp
  coap-client-notls -m put -e open coap://%[1]v/demo/actuators/valve
  coap-client-notls -m get -P coap://%[1]v %[2]v/sensors/temp

Stop with Ctrl-C.
`, proxy, origin)
}
