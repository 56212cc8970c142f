package acl

import (
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/doccheck"
)

// The README's table names every kind of entry Parse takes.
func TestREADMEListsEveryEntryForm(t *testing.T) {
	readme := doccheck.Read(t, "README.md")
	for _, form := range []string{Loopback, Radio, PSK + "<identity>", CN + "<name>", "192.0.2.0/24"} {
		if !strings.Contains(readme, "| `"+form+"`") {
			t.Errorf("README's table has no row for %q", form)
		}
		if form != "192.0.2.0/24" && !strings.Contains(readme, form) {
			t.Errorf("README does not name %q", form)
		}
	}
}
