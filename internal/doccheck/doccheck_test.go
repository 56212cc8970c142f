package doccheck

import (
	"fmt"
	"reflect"
	"testing"
)

type sample struct {
	Hits, Misses uint64
}

// recorder is a testing.TB that keeps what NamesFields reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

func TestNamesFieldsReportsEachMissingField(t *testing.T) {
	r := &recorder{}
	NamesFields(r, "counts `Hits` only; Misses plain", "`%s`", reflect.TypeFor[sample]())
	if len(r.errs) != 1 {
		t.Fatalf("reported %q, want Misses alone", r.errs)
	}
	r.errs = nil
	NamesFields(r, "`Hits` and `Misses`", "`%s`", reflect.TypeFor[sample]())
	if len(r.errs) != 0 {
		t.Fatalf("reported %q for a text naming both", r.errs)
	}
}
