package coap

import "context"

// StreamWriter is a NotifyWriter of a request that came over a reliable
// transport (RFC 8323: TCP, TLS, WebSockets), which has no CON or NON
// (§7.2) and no RST: a Notify with con set has done told once the
// notification is written to the connection, so an Observe hub that sets
// con for every notification to such a writer keeps at most one in the
// connection's queue, the newest state waiting in its latest-wins slot.
// Context ends when the connection closes; every observation it held
// ends with it (§7.4).
type StreamWriter interface {
	NotifyWriter
	Context() context.Context
}
