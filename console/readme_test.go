package console

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// The README's table lists every path Register serves, and its text
// every field of the Snapshot's JSON.
func TestREADMEListsEveryPathAndSnapshotField(t *testing.T) {
	readme := doccheck.Read(t, "README.md")
	mux := http.NewServeMux()
	New(Config{Snapshot: func() Snapshot { return Snapshot{} }, History: NewHistory(0, 0)}).Register(mux)
	for _, path := range []string{"/", "/console.js", "/console.css", "/console/events", "/api/v1/", "/api/v1/status", "/api/v1/history", "/api/v1/events"} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1"+path, nil)
		if _, pattern := mux.Handler(req); pattern == "" {
			t.Errorf("%s is not served", path)
		}
		if !strings.Contains(readme, "| `"+path+"` |") {
			t.Errorf("README's table has no row for %s", path)
		}
	}
	for f := range reflect.TypeFor[Snapshot]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README does not name the Snapshot field %q", name)
		}
	}
}
