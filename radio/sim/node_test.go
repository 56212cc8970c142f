package sim_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

var simPrefix = netip.MustParsePrefix("fd00:db8:7::/64")

func newNode(t *testing.T, air *sim.Air, cfg sim.NodeConfig) *sim.Node {
	t.Helper()
	if !cfg.Prefix.IsValid() {
		cfg.Prefix = simPrefix
	}
	if cfg.PANID == 0 {
		cfg.PANID = 0xFACE
	}
	n, err := sim.NewNode(air, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func get(t *testing.T, from *sim.Node, to netip.Addr, code coap.Code, path string, payload []byte) *coap.Message {
	t.Helper()
	req := &coap.Message{Type: coap.Confirmable, Code: code, Payload: payload}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		req.Options = req.Options.Insert(coap.URIPath, []byte(seg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := from.Endpoint().Do(ctx, netip.AddrPortFrom(to, 5683), req)
	if err != nil {
		t.Fatalf("%v %s: %v", code, path, err)
	}
	return resp
}

func TestNodeServesItsResources(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	server := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(0)})
	bystander := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(1)})
	if want := netip.MustParseAddr("fd00:db8:7::1"); server.Addr() != want {
		t.Fatalf("node address %v, want %v (derived from %v)", server.Addr(), want, server.ExtAddr())
	}

	resp := get(t, client, server.Addr(), coap.GET, "/.well-known/core", nil)
	if cf, _ := resp.Options.Uint(coap.ContentFormat); resp.Code != coap.Content || cf != 40 || !bytes.Contains(resp.Payload, []byte("</sensors/temp>")) {
		t.Fatalf("core: %v cf %d %q", resp.Code, cf, resp.Payload)
	}
	resp = get(t, client, server.Addr(), coap.GET, "/sensors/temp", nil)
	etag, _ := resp.Options.Get(coap.ETag)
	if age, ok := resp.Options.Uint(coap.MaxAge); resp.Code != coap.Content || !ok || age < 1 || len(etag) == 0 || len(resp.Payload) < 4 {
		t.Fatalf("temp: %v max-age %d etag %x %q", resp.Code, age, etag, resp.Payload)
	}
	if c := get(t, client, server.Addr(), coap.POST, "/sensors/temp", nil).Code; c != coap.MethodNotAllowed {
		t.Fatalf("POST temp: %v", c)
	}
	if c := get(t, client, server.Addr(), coap.PUT, "/actuators/valve", []byte("open")).Code; c != coap.Changed || server.Valve() != "open" {
		t.Fatalf("PUT valve: %v, valve %q", c, server.Valve())
	}
	if c := get(t, client, server.Addr(), coap.GET, "/nope", nil).Code; c != coap.NotFound {
		t.Fatalf("GET /nope: %v", c)
	}
	big := bytes.Repeat([]byte{0xa5, 0x5a, 0x00, 0xff}, 150)
	if resp := get(t, client, server.Addr(), coap.PUT, "/echo", big); resp.Code != coap.Changed || !bytes.Equal(resp.Payload, big) {
		t.Fatalf("echo: %v, %d octets", resp.Code, len(resp.Payload))
	}
	if got := server.Requests(); got != 6 {
		t.Errorf("server served %d requests, want 6", got)
	}
	if bystander.Requests() != 0 || bystander.Conn().Counters().FramesRx != 0 {
		t.Errorf("bystander took frames not addressed to it: %d requests, %+v", bystander.Requests(), bystander.Conn().Counters())
	}
	if s := air.Stats(); s.Frames < 12 || s.Bytes == 0 || s.NoAck != 0 {
		t.Errorf("air stats %+v", s)
	}
}

func TestNodeWithShortAddressAnswersFromIt(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	server := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(4), ShortAddr: mac.ShortAddr(0x0042)})
	if want := netip.MustParseAddr("fd00:db8:7::ff:fe00:42"); server.Addr() != want {
		t.Fatalf("address %v, want %v", server.Addr(), want)
	}
	if resp := get(t, client, server.Addr(), coap.GET, "/actuators/valve", nil); string(resp.Payload) != "closed" {
		t.Fatalf("valve %q", resp.Payload)
	}
}

func TestNodeUnreachableAfterClose(t *testing.T) {
	air := sim.NewAir(sim.AirConfig{})
	client := newNode(t, air, sim.NodeConfig{ExtAddr: mac.ExtendedAddrUint64(0x02000000000000aa)})
	server := newNode(t, air, sim.NodeConfig{ExtAddr: sim.NodeExtAddr(0)})
	server.Close()
	server.Close()
	err := client.Conn().WriteTo(context.Background(), []byte{0x40, 1, 0, 1}, netip.AddrPortFrom(server.Addr(), 5683))
	if !errors.Is(err, radio.ErrNoAck) {
		t.Fatalf("write to a closed node: %v, want ErrNoAck", err)
	}
}

func TestNewNodeRejectsShortOnlyAddress(t *testing.T) {
	if _, err := sim.NewNode(sim.NewAir(sim.AirConfig{}), sim.NodeConfig{ExtAddr: mac.ShortAddr(1), Prefix: simPrefix}); err == nil {
		t.Fatal("no error")
	}
}

func TestNetworkStartsNodesAndCleansUp(t *testing.T) {
	cfg := radio.Config{Name: "sim0", Driver: "sim", Channel: 20}.Defaults()
	n, err := sim.NewNetwork(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	want := []netip.Addr{netip.MustParseAddr("fd00:db8:1::1"), netip.MustParseAddr("fd00:db8:1::2"), netip.MustParseAddr("fd00:db8:1::3")}
	if !slices.Equal(n.Nodes(), want) {
		t.Fatalf("nodes %v, want %v", n.Nodes(), want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	if ch, pan, _, ext, raw := n.RCP().Radio(); ch != 20 || pan != 0xFACE || ext != n.ExtAddr() || !raw {
		t.Fatalf("rcp set to channel %d pan %#x ext %x raw %v", ch, pan, ext, raw)
	}
	dir := filepath.Dir(n.Port().Path())
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary directory %s: %v", dir, err)
	}
	if err := n.Send(ctx, []byte{0x41, 0x88}); !errors.Is(err, radio.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestNetworkPublishesAtDevice(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "by-id", "sim-rcp")
	cfg := radio.Config{Name: "sim0", Driver: "sim", Device: dev, Options: sim.Config{Nodes: 1}}.Defaults()
	n, err := sim.NewNetwork(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Port().Path() != dev || len(n.Nodes()) != 1 || n.Nodes()[0] != sim.NodeAddr(sim.DefaultPrefix, 0) ||
		sim.NodeAddr(sim.DefaultPrefix, 0).String() != "fd00:db8:1::1" {
		t.Fatalf("port %s, nodes %v", n.Port().Path(), n.Nodes())
	}
	n.Close()
	if _, err := os.Lstat(dev); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link left at %s: %v", dev, err)
	}
	if _, err := os.Stat(filepath.Dir(dev)); err != nil {
		t.Fatalf("the configured directory was removed: %v", err)
	}
}

func TestSimIsRegistered(t *testing.T) {
	if !slices.Contains(radio.Drivers(), "sim") {
		t.Fatalf("drivers %v", radio.Drivers())
	}
}

// The README names every counter and node setting.
func TestREADMENamesCountersAndSettings(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[sim.AirStats](), reflect.TypeFor[sim.NodeConfig](), reflect.TypeFor[sim.RCPStats]()} {
		for f := range typ.Fields() {
			if !strings.Contains(string(b), "`"+f.Name+"`") {
				t.Errorf("README.md does not mention %s.%s", typ.Name(), f.Name)
			}
		}
	}
}

// Keys configured in a binary without radio/sim/nodekeys are an error, not
// silently unprotected nodes.
func TestNetworkWithKeysNeedsAKeyLoader(t *testing.T) {
	cfg := radio.Config{Name: "sim0", Driver: "sim", Options: sim.Config{SignKey: filepath.Join(t.TempDir(), "node.key")}}.Defaults()
	if n, err := sim.NewNetwork(cfg, nil); !errors.Is(err, sim.ErrNoKeyLoader) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("err = %v, want ErrNoKeyLoader", err)
	}
}

// The README's configuration example reads as a "sim" radio, and the
// README names every key of the driver's own table.
func TestREADMEDocumentsEverySimKey(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md has no toml example")
	}
	var f struct {
		Radio []toml.Primitive `toml:"radio"`
	}
	md, err := toml.Decode(string(m[1]), &f)
	if err != nil || len(f.Radio) != 1 {
		t.Fatalf("example: %v, %d radios", err, len(f.Radio))
	}
	c, err := radio.Decode(func(v any) error { return md.PrimitiveDecode(f.Radio[0], v) })
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("example: unknown keys %v", u)
	}
	if err := c.Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for fld := range reflect.TypeFor[sim.Config]().Fields() {
		key := fld.Tag.Get("toml")
		if !strings.Contains(string(b), "`"+key+"`") || !regexp.MustCompile(`(?m)^`+key+` +=`).Match(m[1]) {
			t.Errorf("README.md does not document [radio.sim] %s, in the text and the example", key)
		}
	}
}
