package bridge

import (
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/plugins"
)

// Reload applies routes, limits and names live and lists the sections it
// cannot apply. A new or changed [[plugin]] table is neither applied (the
// plugin host is built once, in New) nor listed: SIGHUP logs "reloaded"
// and the operator's plugin change silently does nothing.
func TestReloadReportsPluginChangesAsNeedingRestart(t *testing.T) {
	p := startProxy(t, nil)
	cfg := p.chain.Load().cfg
	cfg.Plugin = []plugins.Config{{Name: "http", Path: "/usr/lib/gatewayd/plugins/http", SHA256: strings.Repeat("ab", 32)}}
	restart, err := p.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range restart {
		if strings.Contains(s, "plugin") {
			return
		}
	}
	t.Fatalf("a new [[plugin]] table was neither applied nor reported; needs restart: %v", restart)
}
