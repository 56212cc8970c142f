package spinel

import (
	"reflect"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// The README's counter table and config section must name every Stats
// field and every Config field.
func TestREADMENamesEveryCounterAndSetting(t *testing.T) {
	doccheck.NamesFields(t, doccheck.Read(t, "README.md"), "`%s`", reflect.TypeFor[Stats](), reflect.TypeFor[Config]())
}
