package plugins

import (
	"reflect"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

func TestREADMENamesEveryStatsField(t *testing.T) {
	doccheck.NamesFields(t, doccheck.Read(t, "README.md"), "`%s`", reflect.TypeFor[Stats]())
}
