package pubsub

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// The README's interaction table names tests that exist, and its config
// table lists every key of Config.
func TestREADMEStaysTrue(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*_test.go")
	var src strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	named := regexp.MustCompile("`(Test[A-Za-z0-9_]+|Fuzz[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(readme), -1)
	if len(named) < 25 {
		t.Fatalf("README names only %d tests", len(named))
	}
	for _, m := range named {
		if !strings.Contains(src.String(), "func "+m[1]+"(") {
			t.Errorf("README names %s, which does not exist", m[1])
		}
	}
	for _, sec := range []string{"2.3.1", "2.3.2", "2.3.3", "2.3.4", "2.4.1", "2.4.2", "2.4.3", "2.5.1", "2.5.2", "2.5.3", "2.5.4", "2.5.5", "3.1", "3.2.1", "3.2.2", "3.2.3", "3.2.4", "3.3", "3.4"} {
		if !strings.Contains(string(readme), "\n| "+sec+" |") && !strings.Contains(string(readme), "\n| "+sec+",") {
			t.Errorf("README table has no row for §%s", sec)
		}
	}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		key := typ.Field(i).Tag.Get("toml")
		if !strings.Contains(string(readme), "| `"+key+"` |") {
			t.Errorf("README does not list config key %q", key)
		}
	}
	doccheck.NamesFields(t, string(readme), "| `%s` |", reflect.TypeFor[Stats]())
}
