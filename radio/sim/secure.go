package sim

import (
	"errors"
	"fmt"

	"github.com/opaque-edge/gatewayd/coap"
)

// The proxy links this package (its "sim" driver) and must never link
// end-to-end code (DESIGN.md: e2e/ is not imported by bridge/, cache/,
// observe/). So a node's OSCORE server and signer come in through the two
// interfaces below, and package radio/sim/nodekeys, which does import e2e/,
// provides them; a binary that imports it can configure them with
// [radio.sim] oscore_dir and sign_key.

// OSCOREServer is a node's server side of OSCORE (RFC 8613): it verifies a
// request that carries an OSCORE option and gives the Exchange that
// protects the responses to it.
type OSCOREServer interface {
	// UnprotectRequest returns the decrypted request and its Exchange. On
	// failure it may also return the unprotected error response of §8.2
	// to send (errResp), else the node answers 4.00.
	UnprotectRequest(m *coap.Message) (req *coap.Message, ex Exchange, errResp *coap.Message, err error)
}

// Exchange protects the responses to one verified OSCORE request: the
// first response and, for an Observe registration, every notification
// (RFC 8613 §8.3, §4.1.3.5). *oscore.Exchange is one.
type Exchange interface {
	ProtectResponse(resp *coap.Message) (*coap.Message, error)
}

// Signer makes a signed representation (a COSE_Sign1 object, CoAP
// Content-Format 18) of payload bound to the resource uri, the payload's
// Content-Format and a counter that grows with every signature.
// *signed.Signer is one.
type Signer interface {
	Sign(uri string, contentFormat uint16, payload []byte) ([]byte, error)
}

// NodeKeys is the end-to-end material of one node; nil fields leave the
// node without that resource.
type NodeKeys struct {
	OSCORE OSCOREServer
	Signer Signer
}

// KeyLoader loads the NodeKeys of a Network's count nodes, in node order,
// from the [radio.sim] config.
type KeyLoader func(cfg Config, count int) ([]NodeKeys, error)

// keyLoader is set once from an init function, before any Network starts.
var keyLoader KeyLoader

// RegisterKeyLoader sets the loader Networks use for oscore_dir and
// sign_key. Call it from an init function (radio/sim/nodekeys does).
func RegisterKeyLoader(l KeyLoader) { keyLoader = l }

// ErrNoKeyLoader: oscore_dir or sign_key is set but the binary links no
// KeyLoader.
var ErrNoKeyLoader = errors.New("sim: oscore_dir and sign_key need radio/sim/nodekeys linked in")

// ErrNoSigner: SignReading on a node without a Signer.
var ErrNoSigner = errors.New("sim: node has no signing key")

// loadKeys returns the nodes' keys, or nil when none are configured.
func loadKeys(cfg Config, count int) ([]NodeKeys, error) {
	if cfg.OSCOREDir == "" && cfg.SignKey == "" {
		return nil, nil
	}
	if keyLoader == nil {
		return nil, ErrNoKeyLoader
	}
	keys, err := keyLoader(cfg, count)
	if err != nil {
		return nil, err
	}
	if len(keys) != count {
		return nil, fmt.Errorf("sim: key loader gave keys for %d nodes, want %d", len(keys), count)
	}
	return keys, nil
}
