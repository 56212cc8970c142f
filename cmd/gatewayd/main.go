// Command gatewayd is a CoAP proxy for IEEE 802.15.4 edge gateways: it
// forwards, caches and fans out CoAP between internet clients and
// constrained nodes without ever holding their end-to-end keys.
//
// Usage:
//
//	gatewayd [-config /etc/gatewayd/gatewayd.toml] [-check] [-version]
//
// Without -config it runs a demo on loopback (demo.go). Built with -tags
// nodemo, as the Debian package's is, it has no demo, links neither the
// simulator nor end-to-end code, and reads /etc/gatewayd/gatewayd.toml.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatewayd:", err)
		os.Exit(1)
	}
}
