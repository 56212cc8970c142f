package main

// The radio drivers gatewayd ships: bridge imports none, so the program
// that runs the proxy chooses. The simulator comes with the demo.
import _ "github.com/opaque-edge/gatewayd/radio/spinel" // registers "spinel"
