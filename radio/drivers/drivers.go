// Package drivers registers the radio drivers that ship in this module,
// "spinel" and "sim", with package radio. Import it for its side effect:
//
//	import _ "github.com/opaque-edge/gatewayd/radio/drivers"
package drivers

import (
	_ "github.com/opaque-edge/gatewayd/radio/sim"    // registers "sim"
	_ "github.com/opaque-edge/gatewayd/radio/spinel" // registers "spinel"
)
