package http

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestREADMENamesEveryCounter(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	st := reflect.TypeFor[Stats]()
	for i := range st.NumField() {
		if !strings.Contains(string(b), st.Field(i).Name) {
			t.Errorf("README.md does not mention counter %s", st.Field(i).Name)
		}
	}
}
