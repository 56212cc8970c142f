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

	if demoMode {
		cfg.Radio = []radio.Config{{Name: "sim", Driver: "sim"}}
		// Reverse routes to the simulated nodes: /node1/... and so on.
		for i := 0; i < radio.DefaultSimNodes; i++ {
			cfg.Route = append(cfg.Route, bridge.RouteConfig{
				Name:   fmt.Sprintf("node%d", i+1),
				Target: fmt.Sprintf("coap://[%v]", simNodeAddr(i)),
			})
		}
	}
	p, err := bridge.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("gatewayd started", "version", buildVersion())
	if demoMode {
		printBanner(stdout, p.Addrs()[0], p.Radios()[0].Nodes())
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

// simNodeAddr is the address of the demo's i-th simulated node: the sim
// prefix and the IID of the node's MAC address (RFC 4944 §6).
func simNodeAddr(i int) netip.Addr {
	b := radio.DefaultSimPrefix.Addr().As16()
	iid, _ := sim.NodeExtAddr(i).IID()
	copy(b[8:], iid[:])
	return netip.AddrFrom16(b)
}

func printBanner(w io.Writer, proxy netip.AddrPort, nodes []netip.Addr) {
	fmt.Fprintf(w, "\ngatewayd demo: a CoAP proxy on %v in front of a simulated 802.15.4 radio\n", proxy)
	fmt.Fprintf(w, "(a fake OpenThread RCP on a pseudo-terminal, driven through the real Spinel driver)\n")
	fmt.Fprintf(w, "with %d simulated nodes:", len(nodes))
	for _, n := range nodes {
		fmt.Fprintf(w, " %v", n)
	}
	c := "coap-client-notls" // Debian package libcoap3-bin
	fmt.Fprintf(w, `

Try (coap-client-notls is in the Debian package libcoap3-bin):

  %[1]s -m get -P coap://%[2]v coap://[%[3]v]/sensors/temp
  %[1]s -m put -e open -P coap://%[2]v coap://[%[3]v]/actuators/valve
  %[1]s -m get -P coap://%[2]v coap://[%[3]v]/actuators/valve
  %[1]s -m get -P coap://%[2]v coap://[%[3]v]/.well-known/core
  %[1]s -m get coap://%[2]v/node1/sensors/temp      (reverse route)
  %[1]s -m get coap://%[2]v/.well-known/core

Stop with Ctrl-C.
`, c, proxy, nodes[0])
}
