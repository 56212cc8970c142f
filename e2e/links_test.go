package e2e

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/shipped"
)

const module = "github.com/opaque-edge/gatewayd"

// endpointSide are the module's packages allowed to link end-to-end code:
// the endpoint packages, the simulated nodes' key loader, and the two
// commands that play endpoints. gatewayctl is the client; gatewayd, as
// `go run ./cmd/gatewayd` builds it, links radio/sim/nodekeys for its
// built-in demo and for [radio.sim] nodes, whose keys the simulated nodes
// hold in the daemon's process (the top-level README says so). The
// packaged gatewayd links none: TestShippedProgramsLinkNoSimulatorOrKeys.
// Every other package, a new one included, is held to linking none.
var endpointSide = []string{
	"e2e", "e2e/oscore", "e2e/signed",
	"radio/sim/nodekeys",
	"cmd/gatewayctl", "cmd/gatewayd",
}

// proxyPath are the packages a forwarded request goes through; the test
// fails if one of them is missing from the module, so that the list
// cannot go stale unseen.
var proxyPath = []string{
	"bridge", "cache", "observe", "observe/pubsub", "rd", "coap",
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

// isSimulator reports whether an import path is the simulated radio: the
// simulator, its nodes' keys, the pseudo-terminal library it needs.
func isSimulator(path string) bool {
	return path == module+"/radio/sim" || strings.HasPrefix(path, module+"/radio/sim/") ||
		path == "github.com/creack/pty" || strings.HasPrefix(path, "github.com/creack/pty/")
}

// deps lists what pkg links, built with tags as the package builds it.
func deps(t *testing.T, ctx context.Context, pkg, tags string) []string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-tags", tags, "-f", "{{.ImportPath}}", pkg)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// The programs the Debian package ships, as it builds them: none links
// the simulator or its pseudo-terminal library, and none but gatewayctl,
// the client, links end-to-end code. The installed gatewayd is a proxy
// with no key of any endpoint in its binary.
func TestShippedProgramsLinkNoSimulatorOrKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The detectors work: gatewayd built as `go run` builds it, with the
	// demo, links all of it.
	demo := deps(t, ctx, "./cmd/gatewayd", "")
	for _, want := range []string{module + "/radio/sim", "github.com/creack/pty", module + "/e2e/oscore", "github.com/veraison/go-cose"} {
		if !slices.Contains(demo, want) || !isSimulator(want) && !isKeyCode(want) {
			t.Fatalf("the demo build does not show %s as the checks below would see it", want)
		}
	}
	daemon := false
	for _, p := range shipped.Programs {
		for _, dep := range deps(t, ctx, p.Pkg, p.Tags) {
			if isSimulator(dep) {
				t.Errorf("%s (%s, -tags %q) links the simulator: %s", p.Installed, p.Pkg, p.Tags, dep)
			}
			if isKeyCode(dep) && p.Name() != "gatewayctl" {
				t.Errorf("%s (%s, -tags %q) links end-to-end code: %s", p.Installed, p.Pkg, p.Tags, dep)
			}
		}
		daemon = daemon || p.Pkg == "./cmd/gatewayd"
	}
	if !daemon {
		t.Fatal("the package ships no gatewayd: internal/shipped is out of date")
	}
}
