package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A value the decoder accepts but Validate refuses is reported with the
// line that sets it, as an unknown key or a bad type is: in its own table,
// in the right instance of an array of tables, or at the table's header
// when the key at fault is missing.
func TestValidationErrorsNameTheLine(t *testing.T) {
	zeros := strings.Repeat("0", 64)
	tests := []struct {
		name, config, want string
	}{
		{"proxy key", "[proxy]\nlisten = [\"udp://127.0.0.1:5683\"]\n\nallow = [\"10.0.0.0/33\"]\n", ":4: proxy: allow:"},
		{"same key in another table first", "[metrics]\nlisten = \"127.0.0.1:9100\"\n[proxy]\nlisten = [\"sctp://127.0.0.1:1\"]\n", ":4: proxy: listen:"},
		{"missing key names what needs it", "[proxy]\ntimeout = \"1s\"\nlisten = [\"dtls://127.0.0.1:5684\"]\n", ":3: proxy: psk_file:"},
		{"first key the message names", "[cache]\nmax_bytes = 10\nmax_entry_bytes = 20\n", ":3: cache: bad config: max_entry_bytes"},
		{"second of an array of tables", "[[route]]\nname = \"a\"\ntarget = \"coap://127.0.0.1/x\"\n\n[[route]]\nname = \"b\"\ntarget = \"http://127.0.0.1/y\"\n", ":7: route[1]"},
		{"plugin by index", "[[plugin]]\nname = \"ok\"\npath = \"/bin/true\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n[[plugin]]\nname = \"x\"\npath = \"/bin/true\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nmax_observations = -1\n", ":9: plugin[1]"},
		{"key in another table is not taken", "[observe]\n# nothing set here\n[proxy]\nhop_limit = 0\n", ":4: proxy: hop_limit"},
		{"header when the key at fault is missing", "[[plugin]]\npath = \"/bin/true\"\n", ":1: plugin[0]"},
		{"single-quoted key", "[proxy]\n'hop_limit' = 0\n", ":2: proxy: hop_limit"},
		{"wrapping words and values are not keys", "[[plugin]]\nname = \"a\"\nconfig = { sha256 = \"x\" }\npath = \"/bin/true\"\nsha256 = \"" + zeros + "\"\nmax_observations = -1\n", ":6: plugin[0]"},
		{"sub-tables keep the count of an array of tables", "[[plugin]]\nname = \"a\"\npath = \"/bin/true\"\nsha256 = \"" + zeros + "\"\n[plugin.config]\nx = 1\n[[plugin]]\nname = \"b\"\npath = \"/bin/true\"\nsha256 = \"" + zeros + "\"\nmax_observations = -1\n[[plugin]]\nname = \"c\"\n", ":11: plugin[1]"},
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

func TestDTLSKeyErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	psk := filepath.Join(dir, "psk")
	if err := os.WriteFile(psk, []byte("id:key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const dtls = "[proxy]\nlisten = [\"dtls://127.0.0.1:5684\"]\n"
	tests := []struct {
		name, config, want string
	}{
		{"neither keys nor certificate", dtls, ":2: proxy: psk_file: a dtls address in listen needs keys (psk_file) or a certificate (cert_file)"},
		{"certificate without key", dtls + "cert_file = \"" + notPEM + "\"\n", ":3: proxy: key_file: cert_file needs its private key"},
		{"key without certificate", dtls + "psk_file = \"" + psk + "\"\nkey_file = \"" + notPEM + "\"\n", ":4: proxy: cert_file: key_file needs its certificate"},
		{"client CAs without certificate", "[proxy]\nclient_ca_file = \"" + notPEM + "\"\n", ":2: proxy: cert_file: client_ca_file needs the listener's own certificate"},
		{"unreadable pair", dtls + "cert_file = \"" + notPEM + "\"\nkey_file = \"" + notPEM + "\"\n", ":3: proxy: cert_file, key_file:"},
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
