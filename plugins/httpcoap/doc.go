// Package httpcoap translates between HTTP and CoAP for gatewayd: an
// http.Handler that is an HTTP-to-CoAP proxy (RFC 8075, with the OSCORE
// header field of RFC 8613 §11), and a Client that performs CoAP requests
// whose Proxy-Uri names an http or https resource (RFC 7252 §10.1).
//
// Neither side decrypts anything: an OSCORE-protected message crosses the
// protocol boundary with its OSCORE option value and ciphertext
// byte-identical, and a COSE-protected representation is carried as an
// opaque body with its content format.
//
// Its program is cmd/gatewayd-http, the plugin named "http" in
// gatewayd's configuration.
package httpcoap
