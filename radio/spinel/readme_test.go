package spinel

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The README's counter table and config section must name every Stats
// field and every Config field.
func TestREADMENamesEveryCounterAndSetting(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, typ := range []reflect.Type{reflect.TypeFor[Stats](), reflect.TypeFor[Config]()} {
		for f := range typ.Fields() {
			if !strings.Contains(readme, "`"+f.Name+"`") {
				t.Errorf("README.md does not mention %s.%s", typ.Name(), f.Name)
			}
		}
	}
}
