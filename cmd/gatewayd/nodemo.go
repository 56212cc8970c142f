//go:build nodemo

// The packaged daemon (-tags nodemo) has no demo: with no -config it reads
// /etc/gatewayd/gatewayd.toml. It links neither the simulator nor the
// end-to-end code the demo's nodes need; a [[radio]] with driver "sim"
// says so.

package main

import "github.com/opaque-edge/gatewayd/radio"

func init() {
	radio.RegisterAbsent("sim", "this gatewayd has no simulator: it is built without the demo (-tags nodemo, as the Debian package's is); `go run ./cmd/gatewayd` has both")
}
