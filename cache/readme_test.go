package cache

import (
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// TestREADMEIsTrue keeps README.md in step with the code: its example
// config decodes strictly into Config with the defaults' values, and every
// counter is named.
func TestREADMEIsTrue(t *testing.T) {
	readme := doccheck.Read(t, "README.md")
	start := strings.Index(readme, "```toml\n")
	end := strings.Index(readme[start+1:], "```\n")
	if start < 0 || end < 0 {
		t.Fatal("no toml example")
	}
	var doc struct {
		Cache Config `toml:"cache"`
	}
	md, err := toml.Decode(readme[start+len("```toml\n"):start+1+end], &doc)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("README keys the config does not know: %v", u)
	}
	if doc.Cache != Defaults() {
		t.Fatalf("README example %+v, defaults %+v", doc.Cache, Defaults())
	}
	doccheck.NamesFields(t, readme, "`%s`", reflect.TypeFor[Stats]())
}
