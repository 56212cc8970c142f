// Package oscore is the endpoint side of OSCORE, Object Security for
// Constrained RESTful Environments (RFC 8613): the security context and its
// key derivation (§3), protection and verification of requests and responses
// (§5, §8), the compressed OSCORE option (§6), replay protection (§7.4,
// §7.4.1) and persistence of the Sender Sequence Number (§7.5, Appendix
// B.1.1).
//
// It is used by test endpoints, simulated radio nodes and the operator CLI.
// The gatewayd proxy never imports it: the proxy holds no end-to-end keys and
// forwards OSCORE messages with their protected bytes untouched.
//
// A client protects a request and keeps the returned Exchange to verify the
// response; a server verifies a request, gets the Exchange and protects its
// responses with it:
//
//	preq, ex, err := client.ProtectRequest(req)  // send preq
//	resp, err := client.UnprotectResponse(presp, ex)
//
//	req, ex, err := server.UnprotectRequest(preq) // or Keyring.UnprotectRequest
//	presp, err := server.ProtectResponse(resp, ex)
//
// The algorithms are fixed to the mandatory ones: AES-CCM-16-64-128 (COSE
// algorithm 10) and HKDF SHA-256. Class I options (§4.1.2) are not defined by
// any specification yet, so the external AAD always carries an empty option
// string.
package oscore
