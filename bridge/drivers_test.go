package bridge

// The proxy imports no radio driver: the program that links it chooses
// the drivers it ships (cmd/gatewayd). The tests here run both.
import (
	_ "github.com/opaque-edge/gatewayd/radio/sim"    // registers "sim"
	_ "github.com/opaque-edge/gatewayd/radio/spinel" // registers "spinel"
)
