package radio

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// Config defaults.
const (
	DefaultBaud          = 460800
	DefaultChannel       = 11
	DefaultPANID         = 0xFACE
	DefaultAckTimeout    = 3 * time.Second
	DefaultMaxRetransmit = 4
	DefaultUpTimeout     = 10 * time.Second
)

// PluginDriverPrefix starts the driver names of radio plugins
// ("plugin:<name>").
const PluginDriverPrefix = "plugin:"

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("radio: invalid config")

// Duration is a time.Duration written as a string in TOML ("3s",
// "250ms").
type Duration struct {
	time.Duration
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("radio: duration: %w", err)
	}
	d.Duration = v
	return nil
}

// Config is one `[[radio]]` table: which driver runs the radio, how it is
// set up, and the IPv6 network behind it. It has the keys every radio
// has; a driver's own keys, its [radio.<driver>] table, are in Options.
type Config struct {
	Name   string `toml:"name"`   // names the radio in routes, logs and metrics
	Driver string `toml:"driver"` // a registered driver: "spinel", "sim", ...
	Device string `toml:"device"` // serial device path (spinel: required; sim: where to publish the pty)
	Baud   int    `toml:"baud"`   // default 460800
	// RTSCTS turns RTS/CTS hardware flow control on the serial port on
	// (termios CRTSCTS); nil means the default, true. A device that does
	// not take it runs without, with one warning.
	RTSCTS *bool `toml:"rtscts"`

	Channel uint8  `toml:"channel"` // 11–26, default 11
	PANID   uint16 `toml:"pan_id"`  // default 0xFACE; 0xFFFF is not allowed
	// Prefix is the radio network's /64 (6LoWPAN context 0). Required,
	// unless the driver has a default (the simulator does).
	Prefix netip.Prefix `toml:"prefix"`
	// PCAP, if set, is a file to capture every frame into (LINKTYPE 195).
	PCAP string `toml:"pcap"`
	// ShortAddr is the gateway's short address; nil means none.
	ShortAddr *uint16 `toml:"short_addr"`
	// ExtAddr overrides the gateway's extended address. Unset, it is the
	// address the driver reports (the RCP's HWADDR), learned when the link
	// first comes up.
	ExtAddr mac.Addr `toml:"ext_addr"`

	// AckTimeout and MaxRetransmit are the CoAP message layer's
	// ACK_TIMEOUT and MAX_RETRANSMIT for exchanges over this radio.
	AckTimeout    Duration `toml:"ack_timeout"`    // default 3 s
	MaxRetransmit int      `toml:"max_retransmit"` // default 4
	// UpTimeout bounds how long Open waits for the link to come up when
	// it must learn the extended address from the driver.
	UpTimeout Duration `toml:"up_timeout"` // default 10 s

	Neighbors  []NeighborConfig `toml:"neighbors"`
	Reassembly ReassemblyLimits `toml:"reassembly"`

	// Options are the driver's own settings, a value of the type its
	// Driver.Options names, read from the [radio.<driver>] table by
	// Decode; nil when the driver has none or the table is absent (the
	// driver's Defaults may fill it in).
	Options any `toml:"-"`
}

// NeighborConfig is a static binding of a node's IPv6 address to its MAC
// address, for nodes whose addresses do not derive from their MAC
// addresses.
type NeighborConfig struct {
	IP  netip.Addr `toml:"ip"`
	MAC mac.Addr   `toml:"mac"` // "0x0042" or "00:12:4b:00:00:00:00:42"
}

// ReassemblyLimits bound 6LoWPAN fragment reassembly; zero fields take the
// sixlowpan defaults.
type ReassemblyLimits struct {
	Timeout      Duration `toml:"timeout"`        // at most 60 s (RFC 4944)
	MaxPerSource int      `toml:"max_per_source"` // octets
	MaxTotal     int      `toml:"max_total"`      // octets
	MaxDatagrams int      `toml:"max_datagrams"`
}

// Defaults returns c with every unset field at its default.
func (c Config) Defaults() Config {
	if c.Baud == 0 {
		c.Baud = DefaultBaud
	}
	if c.RTSCTS == nil {
		on := true
		c.RTSCTS = &on
	}
	if c.Channel == 0 {
		c.Channel = DefaultChannel
	}
	if c.PANID == 0 {
		c.PANID = DefaultPANID
	}
	if c.AckTimeout.Duration == 0 {
		c.AckTimeout.Duration = DefaultAckTimeout
	}
	if c.MaxRetransmit == 0 {
		c.MaxRetransmit = DefaultMaxRetransmit
	}
	if c.UpTimeout.Duration == 0 {
		c.UpTimeout.Duration = DefaultUpTimeout
	}
	if d, ok := lookup(c.Driver); ok && d.Defaults != nil {
		c = d.Defaults(c)
	}
	if c.Prefix.IsValid() {
		c.Prefix = c.Prefix.Masked()
	}
	c.Neighbors = append([]NeighborConfig(nil), c.Neighbors...)
	return c
}

// Validate reports the first problem with c, naming the key. It checks c
// as given: call it on c.Defaults() to accept unset fields.
func (c Config) Validate() error {
	bad := c.invalid
	if c.Name == "" {
		return bad("name is required")
	}
	if i := strings.IndexFunc(c.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}); i >= 0 {
		return bad("name: want letters, digits, '-', '_' or '.'")
	}
	if c.Driver == "" {
		return bad("driver is required (registered: %s)", registered())
	}
	if err := checkDriver(c.Driver); err != nil {
		return bad("%w", err)
	}
	if c.Baud < 0 || c.Baud > 4_000_000 {
		return bad("baud = %d: want 0 to 4000000", c.Baud)
	}
	if c.Channel < 11 || c.Channel > 26 {
		return bad("channel = %d: want 11 to 26", c.Channel)
	}
	if c.PANID == mac.BroadcastShort {
		return bad("pan_id = 0xFFFF: the broadcast PAN ID is not a network")
	}
	p := c.Prefix
	switch {
	case !p.IsValid():
		return bad("prefix is required (an IPv6 /64 such as \"fd00:db8:1::/64\")")
	case !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() != 64:
		return bad("prefix = %q: want an IPv6 /64", p)
	case p.Addr().IsMulticast() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsLoopback():
		return bad("prefix = %q: want a global or unique-local /64", p)
	}
	if c.ShortAddr != nil && (*c.ShortAddr == mac.BroadcastShort || *c.ShortAddr == mac.NoShort) {
		return bad("short_addr = 0x%04X: want a unicast short address", *c.ShortAddr)
	}
	if c.ExtAddr.IsValid() {
		e, ok := c.ExtAddr.Extended()
		if !ok {
			return bad("ext_addr = %q: want a 64-bit address like \"18:b4:30:00:00:00:00:01\"", c.ExtAddr)
		}
		if e[0]&1 != 0 {
			return bad("ext_addr = %q: group bit set", c.ExtAddr)
		}
	}
	if d := c.AckTimeout.Duration; d < 100*time.Millisecond || d > time.Minute {
		return bad("ack_timeout = %q: want 100ms to 1m", d)
	}
	if c.MaxRetransmit < 1 || c.MaxRetransmit > 10 {
		return bad("max_retransmit = %d: want 1 to 10", c.MaxRetransmit)
	}
	if c.UpTimeout.Duration < 0 {
		return bad("up_timeout = %q: negative", c.UpTimeout.Duration)
	}
	seen := make(map[netip.Addr]bool, len(c.Neighbors))
	for i, n := range c.Neighbors {
		switch {
		case !n.IP.Is6() || n.IP.Is4In6() || n.IP.IsMulticast() || n.IP.IsUnspecified():
			return bad("neighbors[%d]: ip = %q: want a unicast IPv6 address", i, n.IP)
		case !n.MAC.IsValid() || n.MAC.IsBroadcast():
			return bad("neighbors[%d]: mac = %q: want a unicast short or extended address", i, n.MAC)
		case seen[n.IP]:
			return bad("neighbors[%d]: ip = %q: listed twice", i, n.IP)
		}
		seen[n.IP] = true
	}
	r := c.Reassembly
	switch {
	case r.Timeout.Duration < 0 || r.Timeout.Duration > time.Minute:
		return bad("reassembly.timeout = %q: want 0 (default) to 60s", r.Timeout.Duration)
	case r.MaxPerSource < 0:
		return bad("reassembly.max_per_source = %d: negative", r.MaxPerSource)
	case r.MaxTotal < 0:
		return bad("reassembly.max_total = %d: negative", r.MaxTotal)
	case r.MaxDatagrams < 0:
		return bad("reassembly.max_datagrams = %d: negative", r.MaxDatagrams)
	}
	d, _ := lookup(c.Driver)
	if c.Options != nil && (d.Options == nil || reflect.TypeOf(c.Options) != reflect.TypeOf(d.Options)) {
		return bad("options of type %T: driver %q takes %s", c.Options, c.Driver, optionsName(d))
	}
	if d.Validate != nil {
		if err := d.Validate(c); err != nil {
			return bad("%w", err)
		}
	}
	return nil
}

// invalid is an error about c, naming the radio.
func (c Config) invalid(format string, a ...any) error {
	return fmt.Errorf("%w: [[radio]] %q: "+format, append([]any{ErrConfig, c.Name}, a...)...)
}

func optionsName(d Driver) string {
	if d.Options == nil {
		return "none"
	}
	return reflect.TypeOf(d.Options).String()
}

// Decode reads one [[radio]] table. decode fills a value from that table
// as the configuration file's decoder does (BurntSushi/toml's
// MetaData.PrimitiveDecode of the table): the common keys go into
// Config, the table named after the driver into Options. Keys neither
// takes stay undecoded, for the caller's unknown-key check with its line
// numbers. A driver this build lacks and a table of another driver's
// keys are errors (ErrConfig), found first so that the error says so
// rather than naming that table's keys unknown.
func Decode(decode func(v any) error) (Config, error) {
	var c Config
	if err := decode(&c); err != nil {
		return Config{}, err
	}
	if c.Driver != "" {
		if err := checkDriver(c.Driver); err != nil {
			return Config{}, c.invalid("%w", err)
		}
	}
	for _, name := range Drivers() {
		typ := OptionsType(name)
		if typ == nil {
			continue
		}
		// A struct with the one field the driver's table decodes into:
		// its key is the driver's name, known only at run time.
		holder := reflect.New(reflect.StructOf([]reflect.StructField{{
			Name: "Options",
			Type: reflect.PointerTo(typ),
			Tag:  reflect.StructTag("toml:" + strconv.Quote(name)),
		}}))
		if err := decode(holder.Interface()); err != nil {
			return Config{}, err
		}
		opts := holder.Elem().Field(0)
		if opts.IsNil() {
			continue
		}
		if name != c.Driver {
			return Config{}, c.invalid("%s: only for driver %q", name, name)
		}
		c.Options = opts.Elem().Interface()
	}
	return c, nil
}

// Table is c as a TOML encoder (BurntSushi/toml) should write it: the
// common keys, and Options as the table named after the driver, so that
// the written table reads back through Decode as c.
func (c Config) Table() map[string]any {
	t := make(map[string]any)
	v := reflect.ValueOf(c)
	for i, f := range reflect.VisibleFields(v.Type()) {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		t[name] = v.Field(i).Interface()
	}
	if c.Options != nil {
		t[c.Driver] = c.Options
	}
	return t
}

// Short returns the configured short address, or no address.
func (c Config) Short() mac.Addr {
	if c.ShortAddr == nil {
		return mac.Addr{}
	}
	return mac.ShortAddr(*c.ShortAddr)
}

// connConfig is the Conn part of c, given the gateway's extended address.
func (c Config) connConfig(ext mac.Addr) ConnConfig {
	nb := make([]Neighbor, len(c.Neighbors))
	for i, n := range c.Neighbors {
		nb[i] = Neighbor{IP: n.IP, MAC: n.MAC}
	}
	return ConnConfig{
		Prefix:    c.Prefix,
		PANID:     c.PANID,
		ExtAddr:   ext,
		ShortAddr: c.Short(),
		Neighbors: nb,
		Reassembly: sixlowpan.ReassemblyConfig{
			Timeout:      c.Reassembly.Timeout.Duration,
			MaxPerSource: c.Reassembly.MaxPerSource,
			MaxTotal:     c.Reassembly.MaxTotal,
			MaxDatagrams: c.Reassembly.MaxDatagrams,
		},
	}
}
