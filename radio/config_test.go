package radio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/radiotest"
	"github.com/opaque-edge/gatewayd/radio/sim"
	_ "github.com/opaque-edge/gatewayd/radio/spinel" // registers "spinel"
)

func u16(v uint16) *uint16 { return &v }

func TestValidateNamesTheBadKey(t *testing.T) {
	ok := radio.Config{Name: "wpan0", Driver: "spinel", Device: "/dev/ttyACM0", Prefix: netip.MustParsePrefix("fd00:db8:2::/64")}
	if err := ok.Defaults().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*radio.Config)
		want string
	}{
		{"no name", func(c *radio.Config) { c.Name = "" }, "name is required"},
		{"odd name", func(c *radio.Config) { c.Name = "wpan 0" }, "name:"},
		{"no driver", func(c *radio.Config) { c.Driver = "" }, "driver is required"},
		{"spinel without device", func(c *radio.Config) { c.Device = "" }, "device is required"},
		{"channel", func(c *radio.Config) { c.Channel = 27 }, "channel = 27"},
		{"broadcast PAN", func(c *radio.Config) { c.PANID = 0xFFFF }, "pan_id = 0xFFFF"},
		{"no prefix", func(c *radio.Config) { c.Prefix = netip.Prefix{} }, "prefix is required"},
		{"prefix /48", func(c *radio.Config) { c.Prefix = netip.MustParsePrefix("fd00:db8::/48") }, "prefix = \"fd00:db8::/48\""},
		{"IPv4 prefix", func(c *radio.Config) { c.Prefix = netip.MustParsePrefix("10.0.0.0/8") }, "prefix ="},
		{"link-local prefix", func(c *radio.Config) { c.Prefix = netip.MustParsePrefix("fe80::/64") }, "prefix ="},
		{"broadcast short", func(c *radio.Config) { c.ShortAddr = u16(0xFFFF) }, "short_addr = 0xFFFF"},
		{"no-short short", func(c *radio.Config) { c.ShortAddr = u16(0xFFFE) }, "short_addr = 0xFFFE"},
		{"short ext_addr", func(c *radio.Config) { c.ExtAddr = mac.ShortAddr(1) }, "ext_addr ="},
		{"group ext_addr", func(c *radio.Config) { c.ExtAddr = mac.ExtendedAddrUint64(0x0100000000000001) }, "ext_addr ="},
		{"ack_timeout", func(c *radio.Config) { c.AckTimeout = radio.Duration{Duration: time.Millisecond} }, "ack_timeout"},
		{"max_retransmit", func(c *radio.Config) { c.MaxRetransmit = 11 }, "max_retransmit = 11"},
		{"baud", func(c *radio.Config) { c.Baud = -1 }, "baud = -1"},
		{"neighbor ip", func(c *radio.Config) {
			c.Neighbors = []radio.NeighborConfig{{IP: netip.MustParseAddr("10.0.0.1"), MAC: mac.ShortAddr(2)}}
		}, "neighbors[0]: ip"},
		{"neighbor mac", func(c *radio.Config) {
			c.Neighbors = []radio.NeighborConfig{{IP: netip.MustParseAddr("fd00::1")}}
		}, "neighbors[0]: mac"},
		{"neighbor twice", func(c *radio.Config) {
			n := radio.NeighborConfig{IP: netip.MustParseAddr("fd00::1"), MAC: mac.ShortAddr(2)}
			c.Neighbors = []radio.NeighborConfig{n, n}
		}, "neighbors[1]: ip"},
		{"reassembly timeout", func(c *radio.Config) { c.Reassembly.Timeout = radio.Duration{Duration: 2 * time.Minute} }, "reassembly.timeout"},
		{"reassembly cap", func(c *radio.Config) { c.Reassembly.MaxTotal = -1 }, "reassembly.max_total"},
		{"sim options on spinel", func(c *radio.Config) { c.Options = sim.Config{Nodes: 2} }, `driver "spinel" takes none`},
		{"sim nodes", func(c *radio.Config) { c.Driver, c.Options = "sim", sim.Config{Nodes: 65} }, "sim.nodes = 65"},
		{"sim loss", func(c *radio.Config) { c.Driver, c.Options = "sim", sim.Config{Nodes: 1, Loss: 1} }, "sim.loss"},
		{"sim options of another type", func(c *radio.Config) { c.Driver, c.Options = "sim", struct{ Nodes int }{1} }, "takes sim.Config"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok.Defaults()
			c.edit(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, radio.ErrConfig) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"wpan0"`) && c.name != "no name" && c.name != "odd name" {
				t.Fatalf("error %q: want ErrConfig naming %q and the radio", err, c.want)
			}
			if strings.HasPrefix(err.Error(), "R") || !strings.HasPrefix(err.Error(), "radio: ") {
				t.Fatalf("error %q: want lowercase, prefixed by the component", err)
			}
		})
	}
}

func TestUnknownDriverListsRegistered(t *testing.T) {
	cfg := radio.Config{Name: "x", Driver: "zigbee", Device: "/dev/null", Prefix: netip.MustParsePrefix("fd00:1::/64")}.Defaults()
	for _, err := range []error{cfg.Validate(), openErr(cfg)} {
		if !errors.Is(err, radio.ErrUnknownDriver) || !errors.Is(err, radio.ErrConfig) {
			t.Fatalf("error %v: want ErrUnknownDriver and ErrConfig", err)
		}
		if !strings.Contains(err.Error(), `"zigbee"`) || !strings.Contains(err.Error(), "registered: sim, spinel") {
			t.Fatalf("error %q: want the name and the registered drivers", err)
		}
	}
	if d := radio.Drivers(); !slices.Equal(d, []string{"sim", "spinel"}) {
		t.Fatalf("drivers %v", d)
	}
}

func openErr(cfg radio.Config) error {
	r, err := radio.Open(context.Background(), cfg, nil)
	if err == nil {
		r.Close()
	}
	return err
}

func TestDefaults(t *testing.T) {
	c := radio.Config{Name: "sim0", Driver: "sim"}.Defaults()
	if c.Prefix != sim.DefaultPrefix || !reflect.DeepEqual(c.Options, sim.Config{Nodes: 3, Leisure: radio.Duration{Duration: sim.DefaultLeisure}}) || c.AckTimeout.Duration != 3*time.Second ||
		c.MaxRetransmit != 4 || c.Channel != 11 || c.PANID != 0xFACE || c.Baud != 460800 || c.RTSCTS == nil || !*c.RTSCTS {
		t.Fatalf("defaults %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := radio.Config{Name: "wpan0", Driver: "spinel", Prefix: netip.MustParsePrefix("fd00:1::5/64")}.Defaults()
	if s.Prefix.String() != "fd00:1::/64" || s.Options != nil {
		t.Fatalf("spinel defaults %+v", s)
	}
}

// decode decodes one TOML document's [[radio]] tables, failing on keys
// neither Config nor a driver's options have.
func decode(t *testing.T, doc string) []radio.Config {
	t.Helper()
	rs, err := decodeErr(doc)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// decodeErr decodes as the configuration loader (bridge.Parse) does:
// each [[radio]] through radio.Decode, then the unknown-key check.
func decodeErr(doc string) ([]radio.Config, error) {
	var f struct {
		Radio []toml.Primitive `toml:"radio"`
	}
	md, err := toml.Decode(doc, &f)
	if err != nil {
		return nil, err
	}
	var rs []radio.Config
	for _, p := range f.Radio {
		c, err := radio.Decode(func(v any) error { return md.PrimitiveDecode(p, v) })
		if err != nil {
			return nil, err
		}
		rs = append(rs, c)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return nil, fmt.Errorf("unknown keys %v", u)
	}
	return rs, nil
}

func TestTOMLDecodesEveryKey(t *testing.T) {
	rs := decode(t, `
[[radio]]
name = "wpan0"
driver = "spinel"
device = "/dev/ttyACM0"
baud = 115200
rtscts = false
channel = 15
pan_id = 0xFACE
prefix = "fd00:db8:2::/64"
pcap = "/tmp/x.pcap"
short_addr = 0x0001
ext_addr = "18:b4:30:00:00:00:00:01"
ack_timeout = "4s"
max_retransmit = 3
up_timeout = "2s"
neighbors = [{ ip = "fd00:db8:9::42", mac = "0x0042" }, { ip = "fd00:db8:9::43", mac = "00:12:4b:00:00:00:00:43" }]
[radio.reassembly]
timeout = "20s"
max_per_source = 4096
max_total = 16384
max_datagrams = 32
`)
	c := rs[0]
	want := radio.Config{
		Name: "wpan0", Driver: "spinel", Device: "/dev/ttyACM0", Baud: 115200, RTSCTS: new(bool), Channel: 15, PANID: 0xFACE,
		Prefix: netip.MustParsePrefix("fd00:db8:2::/64"), PCAP: "/tmp/x.pcap", ShortAddr: u16(1),
		ExtAddr:    mac.ExtendedAddrUint64(0x18b4300000000001),
		AckTimeout: radio.Duration{Duration: 4 * time.Second}, MaxRetransmit: 3, UpTimeout: radio.Duration{Duration: 2 * time.Second},
		Neighbors: []radio.NeighborConfig{
			{IP: netip.MustParseAddr("fd00:db8:9::42"), MAC: mac.ShortAddr(0x42)},
			{IP: netip.MustParseAddr("fd00:db8:9::43"), MAC: mac.ExtendedAddrUint64(0x00124b0000000043)},
		},
		Reassembly: radio.ReassemblyLimits{Timeout: radio.Duration{Duration: 20 * time.Second}, MaxPerSource: 4096, MaxTotal: 16384, MaxDatagrams: 32},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", c, want)
	}
	if err := c.Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"[[radio]]\nack_timeout = \"soon\"",
		"[[radio]]\next_addr = \"18:b4:30\"",
		"[[radio]]\nprefix = \"fd00::/x\"",
		"[[radio]]\npan_id = 70000",
		"[[radio]]\ndriver = \"sim\"\n[radio.sim]\nnodes = \"three\"",
	} {
		if _, err := decodeErr(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// A driver's own keys, its [radio.<driver>] table, decode into the
// driver's options type; the file format is the one of the common keys'
// sub-tables.
func TestDecodeGivesTheDriverItsTable(t *testing.T) {
	rs := decode(t, `
[[radio]]
name = "hall"
driver = "spinel"
device = "/dev/ttyACM0"
prefix = "fd00:db8:2::/64"

[[radio]]
name = "sim0"
driver = "sim"
[radio.sim]
nodes = 2
loss = 0.25
delay = "5ms"
oscore_dir = "/etc/gatewayd/sim-oscore"
sign_key = "/etc/gatewayd/sim-sign.key"
leisure = "2s"
[[radio.sim.group]]
address = "ff05::1:3"
nodes = [2]
`)
	if len(rs) != 2 || rs[0].Options != nil {
		t.Fatalf("decoded %+v", rs)
	}
	want := sim.Config{Nodes: 2, Loss: 0.25, Delay: radio.Duration{Duration: 5 * time.Millisecond},
		OSCOREDir: "/etc/gatewayd/sim-oscore", SignKey: "/etc/gatewayd/sim-sign.key",
		Leisure: radio.Duration{Duration: 2 * time.Second},
		Groups:  []sim.GroupConfig{{Address: netip.MustParseAddr("ff05::1:3"), Nodes: []int{2}}}}
	if !reflect.DeepEqual(rs[1].Options, want) {
		t.Fatalf("sim options %+v, want %+v", rs[1].Options, want)
	}
	if err := rs[1].Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	// A key the driver's table does not have is left for the file's
	// unknown-key check; a table of another driver's keys is an error.
	for doc, want := range map[string]string{
		"[[radio]]\nname = \"s\"\ndriver = \"sim\"\n[radio.sim]\nnodez = 2\n":                            "unknown keys [radio.sim.nodez]",
		"[[radio]]\nname = \"s\"\ndriver = \"spinel\"\ndevice = \"/dev/null\"\n[radio.sim]\nnodes = 2\n": `"s": sim: only for driver "sim"`,
		"[[radio]]\nname = \"s\"\ndriver = \"zigbee\"\n[radio.zigbee]\nx = 1\n":                          `driver = "zigbee": unknown driver`,
	} {
		if _, err := decodeErr(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}

// Table writes a Config back in the file's format: encoded and decoded
// again, it is the same Config, the driver's options included.
func TestTableReadsBackThroughDecode(t *testing.T) {
	for _, c := range []radio.Config{
		{Name: "sim0", Driver: "sim", Prefix: netip.MustParsePrefix("fd00:1::/64"), Options: sim.Config{Nodes: 2, Loss: 0.5, SignKey: "k"}},
		{Name: "hall", Driver: "spinel", Device: "/dev/ttyACM0", RTSCTS: new(bool), ShortAddr: u16(7),
			Neighbors:  []radio.NeighborConfig{{IP: netip.MustParseAddr("fd00::1"), MAC: mac.ShortAddr(2)}},
			Reassembly: radio.ReassemblyLimits{MaxTotal: 9}},
	} {
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(map[string]any{"radio": []map[string]any{c.Table()}}); err != nil {
			t.Fatal(err)
		}
		back := decode(t, buf.String())
		if len(back) != 1 || !reflect.DeepEqual(back[0], c) {
			t.Fatalf("%+v\nwritten as\n%s\nread back as %+v", c, buf.String(), back)
		}
	}
}

// A driver the build leaves out on purpose says why, where an unknown
// one lists the drivers there are.
func TestAbsentDriverSaysWhy(t *testing.T) {
	radio.RegisterAbsent("zigbee-test", "this build has no zigbee")
	cfg := radio.Config{Name: "z", Driver: "zigbee-test", Prefix: netip.MustParsePrefix("fd00:1::/64")}.Defaults()
	_, derr := decodeErr("[[radio]]\nname = \"z\"\ndriver = \"zigbee-test\"\n[radio.zigbee-test]\nx = 1\n")
	for _, err := range []error{cfg.Validate(), openErr(cfg), derr} {
		if !errors.Is(err, radio.ErrUnknownDriver) || !strings.Contains(err.Error(), `driver = "zigbee-test": unknown driver: this build has no zigbee`) {
			t.Errorf("error %v: want ErrUnknownDriver with the reason", err)
		}
	}
}

// The README's example must decode without unknown keys and validate, and
// the README must name every key, Config field and counter.
func TestREADMEIsTrue(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no toml example")
	}
	for _, blk := range blocks {
		for _, c := range decode(t, blk[1]) {
			if err := c.Defaults().Validate(); err != nil {
				t.Errorf("README example: %v", err)
			}
		}
	}
	var keys func(reflect.Type, string)
	keys = func(typ reflect.Type, prefix string) {
		for f := range typ.Fields() {
			tag := f.Tag.Get("toml")
			if tag == "" {
				continue
			}
			if ft := f.Type; ft.Kind() == reflect.Struct && ft != reflect.TypeFor[radio.Duration]() && ft.PkgPath() == reflect.TypeFor[radio.Config]().PkgPath() {
				keys(ft, prefix+tag+".") // a table: document its keys
				continue
			}
			if !strings.Contains(readme, "`"+prefix+tag+"`") {
				t.Errorf("README.md does not document key %s%s", prefix, tag)
			}
		}
	}
	keys(reflect.TypeFor[radio.Config](), "")
	for _, typ := range []reflect.Type{reflect.TypeFor[radio.Counters](), reflect.TypeFor[radio.LinkCounters](), reflect.TypeFor[radio.ConnCounters]()} {
		for f := range typ.Fields() {
			if !strings.Contains(readme, "`"+f.Name+"`") {
				t.Errorf("README.md does not document %s.%s", typ.Name(), f.Name)
			}
		}
	}
}

type recorder struct{ got [][]byte }

func (r *recorder) WriteMPDU(_ time.Time, b []byte) error {
	r.got = append(r.got, slices.Clone(b))
	return nil
}

func TestTapRecordsBothWaysButNotWhileDown(t *testing.T) {
	a, b := radiotest.Pair()
	defer a.Close()
	defer b.Close()
	rec := &recorder{}
	up := true
	tap := &radio.Tap{Link: upLink{a, &up}, W: rec}
	ctx := context.Background()
	if err := tap.Send(ctx, []byte{1}); err != nil {
		t.Fatal(err)
	}
	b.Send(ctx, []byte{2})
	if _, err := tap.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	up = false
	tap.Send(ctx, []byte{3})
	if want := [][]byte{{1}, {2}}; !reflect.DeepEqual(rec.got, want) {
		t.Fatalf("recorded %v, want %v", rec.got, want)
	}
}

type upLink struct {
	*radiotest.Link
	up *bool
}

func (l upLink) Up() bool { return *l.up }
