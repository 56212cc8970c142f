// Package cache is gatewayd's protection-preserving response cache (RFC 7252
// §5.6), one stage of the proxy's request chain.
//
// The stage answers a request from a fresh stored response without
// contacting the server (seed PR3.1), stores cacheable responses and
// replaces older ones (PR3.2), answers and performs validation with ETags
// (PR3.3, RFC 7252 §5.6.2, §5.9.1.3), serves the remaining freshness as
// Max-Age (PR3.4), serves a stored representation to an Accept that names
// its Content-Format (PR3.5), coalesces identical concurrent misses into
// one upstream request, invalidates a URI's entries when an unsafe request
// to it succeeds, and, storing block-wise responses block by block, drops
// a representation's blocks when the origin answers with another one, so
// that no client reassembles a body from blocks of two (RFC 7959 §2.10).
//
// The cache never reads a protected payload and never changes a protected
// request: a request with the OSCORE option passes untouched (RFC 8613
// §10) unless it is a deterministic request of
// draft-ietf-core-cacheable-oscore (it carries Request-Hash), which is
// cached by its outer options and payload. A stored response goes back out
// byte-identical except for Max-Age.
//
// The cache key is a SHA-256 digest of a canonical encoding of the request:
// see Key and README.md.
package cache
