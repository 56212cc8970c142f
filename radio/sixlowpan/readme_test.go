package sixlowpan

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestREADMEListsCounters keeps the README's counter table true.
func TestREADMEListsCounters(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Counters]()) {
		if !strings.Contains(string(b), "`"+f.Name+"`") {
			t.Errorf("README.md does not document counter %s", f.Name)
		}
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[ReassemblyConfig]()) {
		if !strings.Contains(string(b), "`"+f.Name+"`") {
			t.Errorf("README.md does not document config field %s", f.Name)
		}
	}
}
