package bridge

import (
	"strings"
	"testing"
)

// A value the decoder accepts but Validate refuses is reported with the
// line that sets it, as an unknown key or a bad type is: in its own table,
// in the right instance of an array of tables, or at the table's header
// when the key at fault is missing.
func TestValidationErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, config, want string
	}{
		{"proxy key", "[proxy]\nlisten = [\"udp://127.0.0.1:5683\"]\n\nallow = [\"10.0.0.0/33\"]\n", ":4: proxy: allow:"},
		{"same key in another table first", "[metrics]\nlisten = \"127.0.0.1:9100\"\n[proxy]\nlisten = [\"tcp://127.0.0.1:1\"]\n", ":4: proxy: listen:"},
		{"missing key names what needs it", "[proxy]\ntimeout = \"1s\"\nlisten = [\"dtls://127.0.0.1:5684\"]\n", ":3: proxy: psk_file:"},
		{"first key the message names", "[cache]\nmax_bytes = 10\nmax_entry_bytes = 20\n", ":3: cache: bad config: max_entry_bytes"},
		{"second of an array of tables", "[[route]]\nname = \"a\"\ntarget = \"coap://127.0.0.1/x\"\n\n[[route]]\nname = \"b\"\ntarget = \"http://127.0.0.1/y\"\n", ":7: route[1]"},
		{"plugin by index", "[[plugin]]\nname = \"ok\"\npath = \"/bin/true\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n[[plugin]]\nname = \"x\"\npath = \"/bin/true\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nmax_observations = -1\n", ":9: plugin[1]"},
		{"header when no key is named", "[observe]\n# nothing set here\n[proxy]\nhop_limit = 0\n", ":4: proxy: hop_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.config))
			if err == nil || !strings.Contains(err.Error(), "c.toml"+tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, "c.toml"+tt.want)
			}
		})
	}
}

func TestWordIndex(t *testing.T) {
	for _, tt := range []struct {
		s, w string
		want int
	}{
		{"listen: x", "listen", 0},
		{"a dtls listener in listen", "listen", 19},
		{"max_bytes_x max_bytes", "max_bytes", 12},
		{"nothing", "listen", -1},
		{"", "listen", -1},
	} {
		if got := wordIndex(tt.s, tt.w); got != tt.want {
			t.Errorf("wordIndex(%q, %q) = %d, want %d", tt.s, tt.w, got, tt.want)
		}
	}
}
