package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
)

const keysUsage = `Usage:
  gatewayctl keys ed25519 -out PREFIX
      Writes a new Ed25519 signing key to PREFIX.key (PKCS #8 PEM, mode 0600)
      and its public key to PREFIX.pub (PKIX PEM, mode 0644), and prints the
      key ID (kid) that signed representations name. The server or publisher
      keeps PREFIX.key; clients get PREFIX.pub for -verify.

  gatewayctl keys oscore -out FILE [-peer-out FILE] [-client-id HEX] [-server-id HEX]
      Generates a fresh 32-byte master secret and 8-byte master salt and
      writes a matching pair of OSCORE security contexts (RFC 8613 §3), both
      mode 0600: FILE for the client (gatewayctl -oscore) and the peer file for
      the server. Each context keeps its Sender Sequence Number in a
      sequence_file next to it (FILE.seq), so that no run reuses a nonce.
      The peer file defaults to FILE with ".peer" before a ".toml" suffix
      (or appended). Existing files are never overwritten.
`

func runKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return usageErr("keys: want ed25519 or oscore")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	case "ed25519":
		return keysEd25519(args[1:], stdout, stderr)
	case "oscore":
		return keysOSCORE(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, keysUsage)
	return usageErr("keys: unknown key type %q, want ed25519 or oscore", args[0])
}

func keysFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatewayctl keys "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), keysUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func keysEd25519(args []string, stdout, stderr io.Writer) error {
	fs := keysFlagSet("ed25519", stderr)
	out := fs.String("out", "", "`prefix` of the files to write: PREFIX.key and PREFIX.pub")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return usageErr("keys ed25519: -out PREFIX is required and nothing else")
	}
	priv, err := signed.GenerateKey(nil)
	if err != nil {
		return withCode(exitUsage, err)
	}
	kid, err := signed.KeyID(priv.Public())
	if err != nil {
		return withCode(exitUsage, err)
	}
	keyPath, pubPath := *out+".key", *out+".pub"
	if err := refuseExisting(keyPath, pubPath); err != nil {
		return err
	}
	if err := signed.WritePrivateKeyFile(keyPath, priv); err != nil {
		return withCode(exitUsage, err)
	}
	if err := signed.WritePublicKeyFile(pubPath, priv.Public()); err != nil {
		os.Remove(keyPath)
		return withCode(exitUsage, err)
	}
	fmt.Fprintf(stdout, "private key %s (keep it on the signer)\npublic key  %s\nkid         %x\n", keyPath, pubPath, kid)
	return nil
}

func keysOSCORE(args []string, stdout, stderr io.Writer) error {
	fs := keysFlagSet("oscore", stderr)
	out := fs.String("out", "", "client security context `file` to write")
	peerOut := fs.String("peer-out", "", "server security context `file` to write (default: derived from -out)")
	clientID := fs.String("client-id", "", "client Sender ID in `hex`, 0 to 7 bytes (default: 4 random bytes)")
	serverID := fs.String("server-id", "", "server Sender ID in `hex`, 0 to 7 bytes (default: empty)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return usageErr("keys oscore: -out FILE is required and nothing else")
	}
	peer := *peerOut
	if peer == "" {
		peer = peerName(*out)
	}
	if filepath.Clean(peer) == filepath.Clean(*out) {
		return usageErr("keys oscore: -out and -peer-out name the same file")
	}
	cid, err := hexFlag("client-id", *clientID)
	if err != nil {
		return err
	}
	if *clientID == "" {
		cid = random(4)
	}
	sid, err := hexFlag("server-id", *serverID)
	if err != nil {
		return err
	}
	params := oscore.Params{MasterSecret: random(32), MasterSalt: random(8)}
	client := oscore.Config{Params: params}
	client.SenderID, client.RecipientID = cid, sid
	client.SeqStore = oscore.FileSeqStore{Path: filepath.Base(*out) + ".seq"}
	server := oscore.Config{Params: params}
	server.SenderID, server.RecipientID = sid, cid
	server.SeqStore = oscore.FileSeqStore{Path: filepath.Base(peer) + ".seq"}
	if err := client.Validate(); err != nil {
		return withCode(exitUsage, fmt.Errorf("keys oscore: %w", err))
	}
	if err := refuseExisting(*out, peer); err != nil {
		return err
	}
	if err := oscore.WriteConfig(*out, client); err != nil {
		return withCode(exitUsage, err)
	}
	if err := oscore.WriteConfig(peer, server); err != nil {
		os.Remove(*out)
		return withCode(exitUsage, err)
	}
	fmt.Fprintf(stdout, "client context %s (sender ID %x)\nserver context %s (sender ID %x)\n", *out, cid, peer, sid)
	return nil
}

// peerName puts ".peer" before a ".toml" suffix, or appends it.
func peerName(out string) string {
	if base, ok := strings.CutSuffix(out, ".toml"); ok {
		return base + ".peer.toml"
	}
	return out + ".peer"
}

func hexFlag(name, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, usageErr("-%s %q: want hex digits: %w", name, s, err)
	}
	if len(b) > 7 {
		return nil, usageErr("-%s: %d bytes, an OSCORE ID has at most 7", name, len(b))
	}
	return b, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// refuseExisting checks before writing anything, so that a half-written
// pair is rare; the writers themselves also refuse to overwrite.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return usageErr("%s exists; refusing to overwrite a key", p)
		}
	}
	return nil
}
