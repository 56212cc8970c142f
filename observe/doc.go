// Package observe is the proxy's Observe hub (RFC 7641 §5): one upstream
// observation per resource, any number of downstream observers, each with
// a latest-wins slot that never blocks the producer.
package observe
