// Package http translates between HTTP and CoAP for gatewayd: an
// http.Handler that is an HTTP-to-CoAP proxy (RFC 8075, with the OSCORE
// header field of RFC 8613 §11), and a Client that performs CoAP requests
// whose Proxy-Uri names an http or https resource (RFC 7252 §10.1).
//
// Neither side decrypts anything: an OSCORE-protected message crosses the
// protocol boundary with its OSCORE option value and ciphertext
// byte-identical, and a COSE-protected representation is carried as an
// opaque body with its content format.
//
// The package is named after its folder; importers usually rename it
// (import httpcoap "github.com/opaque-edge/gatewayd/plugins/http"), and it
// imports net/http as nethttp.
package http
