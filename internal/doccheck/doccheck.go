// Package doccheck keeps a package's README true to its code, for the
// README tests of several packages: every counter and setting the code
// has is named in the text.
package doccheck

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// Read returns the file at path (a package's README.md), failing t if it
// cannot be read.
func Read(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// NamesFields fails t for every field of the struct types that text does
// not mention, a mention being the field's name put into format: "%s"
// for anywhere, "`%s`" for as code, "| `%s` |" for a table's first cell.
func NamesFields(t testing.TB, text, format string, types ...reflect.Type) {
	t.Helper()
	for _, typ := range types {
		for f := range typ.Fields() {
			if !strings.Contains(text, fmt.Sprintf(format, f.Name)) {
				t.Errorf("the README does not mention %s.%s as %q", typ.Name(), f.Name, fmt.Sprintf(format, f.Name))
			}
		}
	}
}
