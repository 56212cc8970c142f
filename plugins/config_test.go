package plugins

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// A config table with arrays of tables (the mqtt plugin's [[up]] and
// [[down]]) decodes with no key left unknown, and reaches the plugin as
// JSON with the arrays intact.
func TestConfigTableKeepsArraysOfTablesAndLeavesNoKeyUndecoded(t *testing.T) {
	const doc = `
[[plugin]]
name = "mqtt"
path = "/usr/lib/gatewayd/plugins/gatewayd-mqtt"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[plugin.config]
broker = "mqtt://127.0.0.1:1883"
poll_min = 1

[[plugin.config.up]]
observe = "coap://[fd00::1]/signed/temp"
topic = "gw/node1/temp"
retain = true

[[plugin.config.up]]
observe = "coap://[fd00::2]/signed/temp"
topic = "gw/node2/temp"

[[plugin.config.down]]
topic = "gw/in/#"
put = "coap://127.0.0.1/ps/data/x"
content_format = 0
[plugin.config.down.nested]
deep = [1, 2]
`
	var c struct {
		Plugin []Config `toml:"plugin"`
	}
	md, err := toml.Decode(doc, &c)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) != 0 {
		t.Fatalf("undecoded keys %v", und)
	}
	if err := c.Plugin[0].Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := c.Plugin[0].configJSON()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Broker  string `json:"broker"`
		PollMin int    `json:"poll_min"`
		Up      []struct {
			Observe, Topic string
			Retain         bool
		} `json:"up"`
		Down []struct {
			Topic, Put    string
			ContentFormat *int `json:"content_format"`
			Nested        struct{ Deep []int }
		} `json:"down"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if got.Broker != "mqtt://127.0.0.1:1883" || got.PollMin != 1 || len(got.Up) != 2 || !got.Up[0].Retain ||
		got.Up[1].Topic != "gw/node2/temp" || len(got.Down) != 1 || got.Down[0].ContentFormat == nil ||
		*got.Down[0].ContentFormat != 0 || len(got.Down[0].Nested.Deep) != 2 {
		t.Fatalf("plugin gets %s", b)
	}
}

// A key that is not a table where the config table belongs is refused.
func TestConfigThatIsNoTableIsRefused(t *testing.T) {
	var c struct {
		Plugin []Config `toml:"plugin"`
	}
	if _, err := toml.Decode("[[plugin]]\nname = \"x\"\nconfig = 3\n", &c); err == nil {
		t.Fatal("config = 3 accepted")
	}
}

func TestMaxObservationsDefaultsAndMustBePositive(t *testing.T) {
	c := Config{Name: "x", Path: "/usr/lib/gatewayd/plugins/x", SHA256: strings.Repeat("0", 64)}
	if d := c.Defaults(); d.MaxObservations != DefaultMaxObservations || d.Validate() != nil {
		t.Fatalf("absent: max_observations %d, %v", d.MaxObservations, d.Validate())
	}
	c.MaxObservations = -1
	err := c.Defaults().Validate()
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "max_observations = -1") {
		t.Fatalf("max_observations = -1: %v", err)
	}
}
