package nodekeys_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
	"github.com/opaque-edge/gatewayd/e2e/signed"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/sim/nodekeys"
)

var prefix = netip.MustParsePrefix("fd00:db8:7::/64")

func newNode(t *testing.T, air *sim.Air, cfg sim.NodeConfig) *sim.Node {
	t.Helper()
	cfg.Prefix, cfg.PANID = prefix, 0xFACE
	n, err := sim.NewNode(air, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// contexts returns a client context and writes the matching server
// context to dir/name.
func contexts(t *testing.T, dir, name string, clientID byte) *oscore.Context {
	t.Helper()
	p := oscore.Params{MasterSecret: bytes.Repeat([]byte{clientID}, 16), MasterSalt: []byte{1, 2}}
	srv := oscore.Config{Params: p}
	srv.SenderID, srv.RecipientID = []byte{}, []byte{clientID}
	if err := oscore.WriteConfig(filepath.Join(dir, name), srv); err != nil {
		t.Fatal(err)
	}
	cli := oscore.Config{Params: p}
	cli.SenderID, cli.RecipientID = []byte{clientID}, []byte{}
	c, err := oscore.NewContext(cli)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func request(code coap.Code, path string) *coap.Message {
	m := &coap.Message{Type: coap.Confirmable, Code: code}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		m.Options = m.Options.Insert(coap.URIPath, []byte(seg))
	}
	return m
}

func do(t *testing.T, from, to *sim.Node, req *coap.Message) *coap.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := from.Endpoint().Do(ctx, netip.AddrPortFrom(to.Addr(), 5683), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestLoadGivesEachNodeItsOwnOrTheSharedContext(t *testing.T) {
	dir := t.TempDir()
	c1 := contexts(t, dir, "node1.toml", 0x01)
	cs := contexts(t, dir, nodekeys.SharedContextFile, 0x0f)
	keys, err := nodekeys.Load(sim.Config{OSCOREDir: dir}, 3)
	if err != nil {
		t.Fatal(err)
	}
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	var nodes []*sim.Node
	for i, k := range keys {
		if k.OSCORE == nil || k.Signer != nil {
			t.Fatalf("node %d: keys %+v", i, k)
		}
		nodes = append(nodes, newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(i), OSCORE: k.OSCORE}))
	}
	for i, tc := range []struct {
		ctx  *oscore.Context
		node int
		want coap.Code
	}{
		{c1, 0, coap.Content},
		{cs, 0, coap.Unauthorized}, // node 1 has its own context only
		{cs, 1, coap.Content},
		{cs, 2, coap.Content},
		{c1, 2, coap.Unauthorized},
	} {
		node := nodes[tc.node]
		preq, ex, err := tc.ctx.ProtectRequest(request(coap.GET, "/oscore/temp"))
		if err != nil {
			t.Fatal(err)
		}
		presp := do(t, client, node, preq)
		if tc.want != coap.Content {
			// §8.2: an unprotected error with an outer Max-Age of 0.
			if ma, ok := presp.Options.Uint(coap.MaxAge); presp.Code != tc.want || presp.Options.Has(coap.OSCORE) || !ok || ma != 0 {
				t.Fatalf("case %d: %v %q", i, presp.Code, presp.Payload)
			}
			continue
		}
		resp, err := ex.UnprotectResponse(presp)
		if err != nil || resp.Code != coap.Content || string(resp.Payload) != node.Reading() {
			t.Fatalf("case %d: %v %v %q, want %q", i, err, resp.Code, resp.Payload, node.Reading())
		}
	}
}

func TestLoadRefusesMissingAndReadableFiles(t *testing.T) {
	dir := t.TempDir()
	contexts(t, dir, "node1.toml", 0x01)
	if _, err := nodekeys.Load(sim.Config{OSCOREDir: dir}, 2); err == nil || !strings.Contains(err.Error(), "node2.toml") {
		t.Fatalf("node 2 without a context: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, "node1.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := nodekeys.Load(sim.Config{OSCOREDir: dir}, 1); !errors.Is(err, oscore.ErrFileMode) {
		t.Fatalf("readable context: %v", err)
	}
	if _, err := nodekeys.Load(sim.Config{SignKey: filepath.Join(dir, "none.key")}, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	if keys, err := nodekeys.Load(sim.Config{}, 2); err != nil || len(keys) != 2 || keys[0] != (sim.NodeKeys{}) {
		t.Fatalf("nothing configured: %v %+v", err, keys)
	}
}

func TestNodeServesProtectedResourcesAndListsThem(t *testing.T) {
	dir := t.TempDir()
	cli := contexts(t, dir, "node1.toml", 0x01)
	priv, err := signed.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sign.key")
	if err := signed.WritePrivateKeyFile(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	keys, err := nodekeys.Load(sim.Config{OSCOREDir: dir, SignKey: keyFile}, 1)
	if err != nil {
		t.Fatal(err)
	}
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	node := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(0), OSCORE: keys[0].OSCORE, Signer: keys[0].Signer})
	plain := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(1)})

	core := do(t, client, node, request(coap.GET, "/.well-known/core"))
	for _, want := range []string{"</oscore/temp>", ";osc", "</signed/temp>", "ct=18"} {
		if !bytes.Contains(core.Payload, []byte(want)) {
			t.Errorf("/.well-known/core lacks %q: %s", want, core.Payload)
		}
	}
	if c := do(t, client, plain, request(coap.GET, "/.well-known/core")); bytes.Contains(c.Payload, []byte("/oscore/")) || bytes.Contains(c.Payload, []byte("/signed/")) {
		t.Errorf("a node without keys lists %s", c.Payload)
	}
	for _, p := range []string{"/oscore/temp", "/signed/temp"} {
		if c := do(t, client, plain, request(coap.GET, p)).Code; c != coap.NotFound {
			t.Errorf("a node without keys answers %s with %v", p, c)
		}
	}
	// OSCORE to a node without it: an unknown critical option.
	preq, _, err := cli.ProtectRequest(request(coap.GET, "/oscore/temp"))
	if err != nil {
		t.Fatal(err)
	}
	if c := do(t, client, plain, preq).Code; c != coap.BadOption {
		t.Errorf("OSCORE to a node without it: %v", c)
	}

	// /oscore/temp only protected; errors inside OSCORE are protected too.
	if resp := do(t, client, node, request(coap.GET, "/oscore/temp")); resp.Code != coap.Unauthorized {
		t.Fatalf("unprotected GET /oscore/temp: %v", resp.Code)
	}
	preq, ex, err := cli.ProtectRequest(request(coap.PUT, "/oscore/temp"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ex.UnprotectResponse(do(t, client, node, preq))
	if err != nil || resp.Code != coap.MethodNotAllowed {
		t.Fatalf("protected PUT: %v %v", err, resp)
	}

	// /signed/temp verifies for the node's own URI, Content-Format 0.
	v := signed.NewVerifier(signed.VerifierConfig{})
	kid, _ := signed.KeyID(priv.Public())
	if err := v.AddKey(kid, priv.Public()); err != nil {
		t.Fatal(err)
	}
	resp = do(t, client, node, request(coap.GET, "/signed/temp"))
	if cf, _ := resp.Options.Uint(coap.ContentFormat); resp.Code != coap.Content || cf != uint32(signed.ContentFormatCOSESign1) {
		t.Fatalf("GET /signed/temp: %v cf %d", resp.Code, cf)
	}
	if want := "coap://[" + node.Addr().String() + "]/signed/temp"; node.SignedURI() != want {
		t.Fatalf("SignedURI %q, want %q", node.SignedURI(), want)
	}
	payload, meta, err := v.Verify(resp.Payload, signed.Expectation{URI: node.SignedURI()})
	if err != nil || !strings.Contains(string(payload), ".") {
		t.Fatalf("verify: %v %q", err, payload)
	}
	// A publication signed for another resource, with the next counter.
	pub, err := node.SignReading("coap://[fd00:db8:7::ff]/ps/data/t1")
	if err != nil {
		t.Fatal(err)
	}
	if _, m, err := v.Verify(pub, signed.Expectation{URI: "coap://[fd00:db8:7::ff]/ps/data/t1"}); err != nil || m.Counter <= meta.Counter {
		t.Fatalf("publication: %v, counter %d after %d", err, m.Counter, meta.Counter)
	}
	if _, err := plain.SignReading("coap://x/y"); !errors.Is(err, sim.ErrNoSigner) {
		t.Fatalf("SignReading without a signer: %v", err)
	}
}

func TestProtectedAndSignedObservationsNotifyEachChange(t *testing.T) {
	dir := t.TempDir()
	cli := contexts(t, dir, "node1.toml", 0x01)
	priv, _ := signed.GenerateKey(nil)
	keyFile := filepath.Join(dir, "sign.key")
	if err := signed.WritePrivateKeyFile(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	keys, err := nodekeys.Load(sim.Config{OSCOREDir: dir, SignKey: keyFile}, 1)
	if err != nil {
		t.Fatal(err)
	}
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	node := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(0), OSCORE: keys[0].OSCORE, Signer: keys[0].Signer})
	dst := netip.AddrPortFrom(node.Addr(), 5683)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	oreq := request(coap.GET, "/oscore/temp")
	oreq.Options = oreq.Options.SetUint(coap.Observe, 0)
	preq, ex, err := cli.ProtectRequest(oreq)
	if err != nil {
		t.Fatal(err)
	}
	onotes := make(chan *coap.Message, 8)
	first, oobs, err := client.Endpoint().Observe(ctx, dst, preq, func(m *coap.Message) { onotes <- m })
	if err != nil || oobs == nil {
		t.Fatalf("observe /oscore/temp: %v", err)
	}
	if m, err := ex.UnprotectResponse(first); err != nil || !m.Options.Has(coap.Observe) {
		t.Fatalf("first protected response: %v %v", err, m)
	}

	sreq := request(coap.GET, "/signed/temp")
	sreq.Options = sreq.Options.SetUint(coap.Observe, 0)
	snotes := make(chan *coap.Message, 8)
	sfirst, sobs, err := client.Endpoint().Observe(ctx, dst, sreq, func(m *coap.Message) { snotes <- m })
	if err != nil || sobs == nil {
		t.Fatalf("observe /signed/temp: %v", err)
	}
	v := signed.NewVerifier(signed.VerifierConfig{})
	kid, _ := signed.KeyID(priv.Public())
	v.AddKey(kid, priv.Public())
	if _, _, err := v.Verify(sfirst.Payload, signed.Expectation{URI: node.SignedURI()}); err != nil {
		t.Fatal(err)
	}
	if node.Observers() != 2 {
		t.Fatalf("%d observers, want 2", node.Observers())
	}
	for i := range 2 {
		select {
		case m := <-onotes:
			// Each notification has its own Partial IV and verifies in
			// order (RFC 8613 §4.1.3.5, §7.4.1).
			if r, err := ex.UnprotectResponse(m); err != nil || !r.Options.Has(coap.Observe) {
				t.Fatalf("protected notification %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatal("no protected notification")
		}
		select {
		case m := <-snotes:
			// Re-signed with a newer counter: a verifier that saw the
			// previous one accepts it.
			if _, _, err := v.Verify(m.Payload, signed.Expectation{URI: node.SignedURI()}); err != nil {
				t.Fatalf("signed notification %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatal("no signed notification")
		}
	}
	oobs.Cancel(ctx)
	sobs.Cancel(ctx)
}
