package rd

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// The README's table names tests that exist, here or (marked) in
// bridge; it has a row for every section of RFC 9176 the directory
// implements; its config table lists every key of Config and its
// counters every field of Stats.
func TestREADMEStaysTrue(t *testing.T) {
	readme := doccheck.Read(t, "README.md")
	src := func(glob string) string {
		files, _ := filepath.Glob(glob)
		var b strings.Builder
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
		return b.String()
	}
	here, bridge := src("*_test.go"), src("../bridge/*_test.go")
	named := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`( \\(bridge\\))?").FindAllStringSubmatch(readme, -1)
	if len(named) < 25 {
		t.Fatalf("README names only %d tests", len(named))
	}
	for _, m := range named {
		in := here
		if m[2] != "" {
			in = bridge
		}
		if !strings.Contains(in, "func "+m[1]+"(") {
			t.Errorf("README names %s%s, which does not exist", m[1], m[2])
		}
	}
	for _, sec := range []string{"4.3", "5", "5.1", "5.3", "5.3.1", "5.3.2", "6.2", "7.5, 8.2", "8.3", "App. C"} {
		if !strings.Contains(readme, "\n| "+sec+" |") {
			t.Errorf("README table has no row for §%s", sec)
		}
	}
	typ := reflect.TypeFor[Config]()
	for f := range typ.Fields() {
		if key := f.Tag.Get("toml"); !strings.Contains(readme, "| `"+key+"` |") {
			t.Errorf("README does not list config key %q", key)
		}
	}
	doccheck.NamesFields(t, readme, "| `%s` |", reflect.TypeFor[Stats]())
	doccheck.NamesFields(t, readme, "`%s`", reflect.TypeFor[Endpoint]())
}
