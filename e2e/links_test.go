package e2e

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const module = "github.com/opaque-edge/gatewayd"

// endpointSide are the module's packages allowed to link end-to-end code:
// the endpoint packages, the simulated nodes' key loader, and the two
// commands that play endpoints. gatewayctl is the client; gatewayd links
// radio/sim/nodekeys for its built-in demo and for [radio.sim] nodes,
// whose keys the simulated nodes hold in the daemon's process (the
// top-level README says so). Every other package, a new one included, is
// held to linking none.
var endpointSide = []string{
	"e2e", "e2e/oscore", "e2e/signed",
	"radio/sim/nodekeys",
	"cmd/gatewayctl", "cmd/gatewayd",
}

// proxyPath are the packages a forwarded request goes through; the test
// fails if one of them is missing from the module, so that the list
// cannot go stale unseen.
var proxyPath = []string{
	"bridge", "cache", "observe", "observe/pubsub", "coap",
	"radio", "radio/spinel", "radio/sixlowpan", "radio/mac", "radio/sim",
	"plugins", "plugins/sdk",
}

// isKeyCode reports whether an import path is end-to-end key code: the
// OSCORE and COSE endpoints, the nodes' key loader, the COSE library.
func isKeyCode(path string) bool {
	return path == module+"/e2e" || strings.HasPrefix(path, module+"/e2e/") ||
		path == module+"/radio/sim/nodekeys" ||
		path == "github.com/veraison/go-cose" || strings.HasPrefix(path, "github.com/veraison/go-cose/")
}

// TestNoProxyPackageLinksEndToEndCode walks every package of the module
// with `go list`: none but the endpoint side may link end-to-end code,
// directly or through any dependency.
func TestNoProxyPackageLinksEndToEndCode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", module+"/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	links := map[string][]string{} // package → the key code it links
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		rel := strings.TrimPrefix(f[0], module+"/")
		links[rel] = nil
		for _, dep := range f {
			if isKeyCode(dep) {
				links[rel] = append(links[rel], dep)
			}
		}
	}
	for _, p := range append(slices.Clone(proxyPath), endpointSide...) {
		if _, ok := links[p]; !ok {
			t.Errorf("%s is not a package of the module: update the lists of this test", p)
		}
	}
	// The detector works: the key loader links the endpoint packages.
	if len(links["radio/sim/nodekeys"]) == 0 || len(links["cmd/gatewayd"]) == 0 {
		t.Fatalf("go list shows no key code where it must be: %v", links)
	}
	checked := 0
	for p, keys := range links {
		if slices.Contains(endpointSide, p) {
			continue
		}
		checked++
		if len(keys) > 0 {
			t.Errorf("%s links end-to-end code: %v", p, keys)
		}
	}
	t.Logf("%d packages link no end-to-end code", checked)
}
