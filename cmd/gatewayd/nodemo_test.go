package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The packaged daemon is built with -tags nodemo: it has no demo and no
// simulator. With no -config it reads the installed file, and a
// [[radio]] with driver "sim" is a config error that says why.
func TestPackagedBuildReadsTheInstalledFileAndHasNoSimulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "gatewayd")
	if out, err := exec.CommandContext(ctx, "go", "build", "-tags", "nodemo", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodemo: %v\n%s", err, out)
	}
	gatewayd := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		return string(out), err
	}

	out, err := gatewayd("-check")
	if !strings.Contains(out, defaultConfig) {
		t.Fatalf("-check without -config: %v %q; want it to check %s", err, out, defaultConfig)
	}
	if _, serr := os.Stat(defaultConfig); errors.Is(serr, os.ErrNotExist) {
		if err == nil || !strings.Contains(out, "no -config was given, and this gatewayd has no built-in demo") {
			t.Fatalf("-check without -config nor %s: %v %q", defaultConfig, err, out)
		}
	}

	sim := filepath.Join(t.TempDir(), "sim.toml")
	if err := os.WriteFile(sim, []byte("[[radio]]\nname = \"s\"\ndriver = \"sim\"\n[radio.sim]\nnodes = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = gatewayd("-check", "-config", sim)
	if err == nil || !strings.Contains(out, `:3: radio[0]: radio: invalid config: [[radio]] "s": driver = "sim": unknown driver: this gatewayd has no simulator`) {
		t.Fatalf("-check of a sim radio: %v %q", err, out)
	}

	out, _ = gatewayd("-h")
	if !strings.Contains(out, "default "+defaultConfig) || strings.Contains(out, "demo") {
		t.Fatalf("-h: %q", out)
	}
}
