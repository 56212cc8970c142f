package observe

import "github.com/opaque-edge/gatewayd/internal/clock"

// Clock is the hub's source of time: the age of a representation, the
// 128-second rule of RFC 7641 §3.4, the CON interval and the upstream
// liveness timer. Tests inject a fake one.
type Clock = clock.Clock

// Timer is a pending AfterFunc call.
type Timer = clock.Timer
