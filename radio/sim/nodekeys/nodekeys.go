// Package nodekeys gives the simulated nodes of radio/sim their end-to-end
// keys: OSCORE server contexts (e2e/oscore) and a signing key (e2e/signed),
// read from the [radio.sim] keys oscore_dir and sign_key. Importing it
// registers its loader with radio/sim:
//
//	import _ "github.com/opaque-edge/gatewayd/radio/sim/nodekeys"
//
// It lives apart from radio/sim because the proxy links radio/sim for its
// "sim" driver and must never link end-to-end code; these keys belong to
// the simulated devices, never to the proxy.
package nodekeys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

func init() { sim.RegisterKeyLoader(Load) }

// SharedContextFile is the context file in oscore_dir that nodes without a
// file of their own share.
const SharedContextFile = "nodes.toml"

// ContextFile is the name of node i's (from 0) own context file in
// oscore_dir: node1.toml for the first node, as the demo's routes name it.
func ContextFile(i int) string { return "node" + strconv.Itoa(i+1) + ".toml" }

// Load returns the keys of count nodes for cfg: with OSCOREDir, node i's
// server context is ContextFile(i) in it, or else SharedContextFile,
// loaded once and shared (one Sender Sequence Number and replay window for
// all nodes that use it, so no nonce repeats); a node with neither is an
// error. With SignKey, every node signs with that key through one Signer.
func Load(cfg sim.Config, count int) ([]sim.NodeKeys, error) {
	keys := make([]sim.NodeKeys, count)
	if cfg.OSCOREDir != "" {
		var shared *oscore.Context
		for i := range keys {
			c, err := readContext(filepath.Join(cfg.OSCOREDir, ContextFile(i)))
			if errors.Is(err, fs.ErrNotExist) {
				if shared == nil {
					shared, err = readContext(filepath.Join(cfg.OSCOREDir, SharedContextFile))
					if errors.Is(err, fs.ErrNotExist) {
						return nil, fmt.Errorf("nodekeys: oscore_dir %s: neither %s nor %s for node %d", cfg.OSCOREDir, ContextFile(i), SharedContextFile, i+1)
					}
					if err != nil {
						return nil, err
					}
				}
				c, err = shared, nil
			}
			if err != nil {
				return nil, err
			}
			keys[i].OSCORE = NewServer(c)
		}
	}
	if cfg.SignKey != "" {
		s, err := ReadSigner(cfg.SignKey)
		if err != nil {
			return nil, err
		}
		for i := range keys {
			keys[i].Signer = s
		}
	}
	return keys, nil
}

func readContext(path string) (*oscore.Context, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("nodekeys: %w", err)
	}
	cfg, err := oscore.ReadConfig(path)
	if err != nil {
		return nil, fmt.Errorf("nodekeys: %w", err)
	}
	c, err := oscore.NewContext(cfg)
	if err != nil {
		return nil, fmt.Errorf("nodekeys: %s: %w", path, err)
	}
	return c, nil
}

// ReadSigner makes a Signer of the private key file at path (e2e/signed's
// format, as `gatewayctl keys ed25519` writes it), with the key ID
// signed.KeyID derives. Its counter starts at the current time in
// microseconds, so that a restarted simulation resumes above the counters
// it issued before without storing them, as long as its clock does not go
// back and it signed fewer than one representation per microsecond.
func ReadSigner(path string) (*signed.Signer, error) {
	key, err := signed.ReadPrivateKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("nodekeys: sign_key: %w", err)
	}
	kid, err := signed.KeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("nodekeys: sign_key: %w", err)
	}
	s, err := signed.NewSigner(signed.SignerConfig{Key: key, KID: kid, Counter: uint64(time.Now().UnixMicro())})
	if err != nil {
		return nil, fmt.Errorf("nodekeys: sign_key: %w", err)
	}
	return s, nil
}

// Server is a node's OSCORE server side: a Keyring picks the context by
// 'kid' and 'kid context'; a failed verification gets the unprotected
// error response of RFC 8613 §8.2.
type Server struct {
	Keyring *oscore.Keyring
}

var _ sim.OSCOREServer = Server{}

// NewServer returns a Server with the contexts cs.
func NewServer(cs ...*oscore.Context) Server {
	k := new(oscore.Keyring)
	for _, c := range cs {
		k.Add(c)
	}
	return Server{Keyring: k}
}

// UnprotectRequest implements sim.OSCOREServer.
func (s Server) UnprotectRequest(m *coap.Message) (*coap.Message, sim.Exchange, *coap.Message, error) {
	req, ex, err := s.Keyring.UnprotectRequest(m)
	if err != nil {
		e, _ := oscore.ErrorResponse(m, err)
		return nil, nil, e, err
	}
	return req, ex, nil, nil
}
