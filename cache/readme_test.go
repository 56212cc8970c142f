package cache

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestREADMEIsTrue keeps README.md in step with the code: its example
// config decodes strictly into Config with the defaults' values, and every
// counter is named.
func TestREADMEIsTrue(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
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
	st := reflect.TypeOf(Stats{})
	for i := range st.NumField() {
		if !strings.Contains(readme, "`"+st.Field(i).Name+"`") {
			t.Errorf("README does not name counter %s", st.Field(i).Name)
		}
	}
}
