package stream

import (
	"reflect"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

func TestREADMENamesEveryCounterAndSetting(t *testing.T) {
	text := doccheck.Read(t, "README.md")
	doccheck.NamesFields(t, text, "%s", reflect.TypeFor[Stats]())
	doccheck.NamesFields(t, text, "`%s`", reflect.TypeFor[Config]())
}
