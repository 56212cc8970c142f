package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// readmeExample is the ```toml block of a README.
func readmeExample(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "```toml\n")
	if i < 0 {
		t.Fatalf("%s has no toml example", path)
	}
	s = s[i+len("```toml\n"):]
	return []byte(s[:strings.Index(s, "```")])
}

// configSeeds are real configurations: the packaged sample, the README's
// example and the pub-sub README's, and a broker with its access lists.
func configSeeds(t testing.TB) [][]byte {
	sample, err := os.ReadFile("../packaging/gatewayd.toml")
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		sample,
		readmeExample(t, "../README.md"),
		readmeExample(t, "../observe/pubsub/README.md"),
		[]byte(`[proxy]
listen = ["udp://127.0.0.1:5683"]
[pubsub]
enabled = true
state_dir = "/var/lib/gatewayd/pubsub"
admins = ["loopback", "radio", "192.0.2.0/24", "psk:ops", "cn:console"]
publishers = ["radio"]
subscribers = []
max_topics_per_client = 4
max_name_length = 32
[[radio]]
name = "sim"
driver = "sim"
`),
		[]byte(`[proxy]
listen = ["udp://[::]:5683", "udp://0.0.0.0:5684"]
rate = 2.5
burst = 10
next_hop = "coap://[2001:db8::1]:5683"
name = "gw-1"
[[route]]
name = "n1"
target = "coap://[fd00::1]:5683/base?q=1"
[[radio]]
name = "hall"
driver = "sim"
channel = 26
pan_id = 0xbeef
prefix = "fd00:db8:2::/64"
short_addr = 0x0001
ext_addr = "00:12:4b:00:00:00:00:01"
neighbors = [{ip = "fd00:db8:2::7", mac = "0x0042"}]
[radio.reassembly]
timeout = "30s"
max_total = 65536
[radio.sim]
nodes = 2
loss = 0.25
delay = "5ms"
[cache]
default_max_age = "30s"
[observe]
notify_type = "con"
[[plugin]]
name = "http"
path = "/usr/lib/gatewayd/plugins/gatewayd-http"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[plugin.config]
listen = "127.0.0.1:8080"
when = 1979-05-27T07:32:00Z
list = [1, 2.5, "x", true]
nested = {a = {b = [[1], [2]]}}
`),
	}
}

// The config loader (what gatewayd -config reads) never panics, and a
// configuration it accepts, written back as TOML, loads again into the
// same configuration: nothing it takes is lost or changed on the way.
func FuzzParseConfig(f *testing.F) {
	for _, s := range configSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("an error that is not ErrConfig: %v", err)
			}
			return
		}
		checkRoundTrip(t, cfg)
	})
}

// checkRoundTrip encodes cfg as TOML and parses it again.
func checkRoundTrip(t *testing.T, cfg Config) {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		t.Fatalf("a valid configuration does not encode: %v", err)
	}
	again, err := Parse("again.toml", buf.Bytes())
	if err != nil {
		t.Fatalf("a valid configuration, encoded again, does not load: %v\n%s", err, buf.Bytes())
	}
	if !reflect.DeepEqual(cfg, again) {
		t.Fatalf("a valid configuration changed on the way through TOML:\n%+v\n%+v\n%s", cfg, again, buf.Bytes())
	}
}

// Each seed loads and round-trips: the sample and the examples are valid.
func TestConfigSeedsLoadAndRoundTrip(t *testing.T) {
	for i, s := range configSeeds(t) {
		cfg, err := Parse("seed.toml", s)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		checkRoundTrip(t, cfg)
	}
}

// The round-trip property of FuzzParseConfig, checked on floats picked by
// hand, failed for rate = nan: it passed Validate (NaN < 0 is false) and
// did not come back equal. With NaN, or inf, every client's bucket is NaN
// and every request a 4.29.
func TestConfigRefusesNaNAndInfiniteRate(t *testing.T) {
	for _, v := range []string{"nan", "+nan", "-nan", "inf", "+inf", "-inf", "-1.0"} {
		_, err := Parse("rate.toml", []byte("[proxy]\nrate = "+v+"\n"))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ":2:") || !strings.Contains(err.Error(), "rate") {
			t.Errorf("rate = %s: %v, want an error naming rate on line 2", v, err)
		}
	}
	for _, v := range []string{"0", "0.5", "1e6"} {
		if _, err := Parse("rate.toml", []byte("[proxy]\nrate = "+v+"\n")); err != nil {
			t.Errorf("rate = %s: %v", v, err)
		}
	}
}

// The files the DTLS keys come from are read only when they are regular
// files of at most a MiB: a device or a huge file named by mistake is an
// error naming the key, not a read without end; a PSK line longer than
// the scanner takes is an error, not the end of the file.
func TestDTLSKeyFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("id:key-0123456789\n"), maxKeyFile/18+1), 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, []byte("a:1\nb:"+strings.Repeat("k", 70<<10)+"\nc:3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, path, want string }{
		{"psk_file", "/dev/null", "not a regular file"},
		{"psk_file", dir, "not a regular file"},
		{"psk_file", big, "over 1048576 bytes"},
		{"psk_file", long, "token too long"},
		{"cert_file", "/dev/null", "not a regular file"},
	} {
		conf := fmt.Sprintf("[proxy]\nlisten = [\"dtls://127.0.0.1:0\"]\n%s = %q\n", c.key, c.path)
		if c.key == "cert_file" {
			conf += fmt.Sprintf("key_file = %q\n", c.path)
		}
		_, err := Parse("keys.toml", []byte(conf))
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s = %q: %v, want an error naming %s: %s", c.key, c.path, err, c.key, c.want)
		}
	}
}
