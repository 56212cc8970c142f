package blockwise

import (
	"reflect"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

func TestREADMENamesEveryClientFieldAndErrorField(t *testing.T) {
	text := doccheck.Read(t, "README.md")
	doccheck.NamesFields(t, text, "| `%s` |", reflect.TypeFor[Client]())
	doccheck.NamesFields(t, text, "`%s`", reflect.TypeFor[TooLargeError]())
}
