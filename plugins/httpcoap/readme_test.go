package httpcoap

import (
	"reflect"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

func TestREADMENamesEveryCounter(t *testing.T) {
	doccheck.NamesFields(t, doccheck.Read(t, "README.md"), "%s", reflect.TypeFor[Stats]())
}
