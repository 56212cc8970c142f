// Package e2e holds the end-to-end security side of gatewayd: the endpoint
// packages e2e/oscore (RFC 8613) and e2e/signed (COSE_Sign1 representations),
// and, in this package's tests, the threat model of
// draft-hartke-core-e2e-security-reqs-00 (the "seed") played out on real UDP
// endpoints.
//
// The tests put a misbehaving proxy between a client and a server, origin or
// broker. It can read every datagram, and modify, inject, replay, reorder,
// swap, delay and drop messages. For every threat the seed calls mitigable,
// a test makes the proxy do exactly that and checks that the endpoint
// detects it with the precise error (oscore.ErrReplay, oscore.ErrDecrypt,
// signed.ErrWrongResource, signed.ErrStale, ...). For every non-requirement
// a test shows what the endpoint cannot detect: a dropped or delayed message,
// the metadata a proxy reads. Other tests run the real gatewayd proxy
// (bridge) and show that an honest proxy passes OSCORE messages and signed
// representations intact.
//
// The misbehaving proxy exists only in _test files: no shipped binary
// contains it. docs/REQUIREMENTS.md maps each identifier of the seed to the
// tests that show it; TestRequirementsTableIsComplete keeps that table true.
//
// Only the endpoint side imports e2e/oscore and e2e/signed: cmd/gatewayctl,
// radio/sim/nodekeys and, through it, cmd/gatewayd for its demo's
// simulated nodes. No package of the proxy path links them, directly or
// not, and none holds an end-to-end key; TestNoProxyPackageLinksEndToEndCode
// checks every package of the module, TestShippedProgramsLinkNoSimulatorOrKeys
// the programs the Debian package ships, the daemon built without its demo.
package e2e
