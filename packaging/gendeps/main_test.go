package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/internal/shipped"
)

// Each shipped program's committed deps.txt is what it links now: a new
// or dropped dependency fails here until the list is regenerated, so it
// shows in the change that brings it.
func TestCommittedDepsListsAreCurrent(t *testing.T) {
	for _, p := range shipped.Programs {
		want, err := generate("../..", p)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("../..", p.Pkg, File)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v: run `go generate ./packaging`", p.Name(), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go generate ./packaging` and review what changed:\n%s",
				filepath.Join(p.Pkg, File), diff(string(got), string(want)))
		}
	}
}

// diff lists the lines only one of committed and current has.
func diff(committed, current string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	a, b := in(committed), in(current)
	var out []string
	for _, l := range strings.Split(current, "\n") {
		if !a[l] {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range strings.Split(committed, "\n") {
		if !b[l] {
			out = append(out, "- "+l)
		}
	}
	return strings.Join(out, "\n")
}

// The lists name the module's own packages and third-party ones, and
// the architectures a package is linked on only some of.
func TestGenerateListsNonStandardPackagesPerArchitecture(t *testing.T) {
	b, err := generate("../..", shipped.Program{Pkg: "./cmd/gatewayd", Installed: "/usr/sbin/gatewayd"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"\ngithub.com/opaque-edge/gatewayd/bridge\n",
		"\ngithub.com/opaque-edge/gatewayd/radio/sim\n", // the demo's, without -tags nodemo
		"\ngo.bug.st/serial\n",
		"\ngolang.org/x/sys/cpu [amd64]\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\nnet/http\n") || strings.Contains(s, "\nfmt\n") {
		t.Errorf("standard library packages listed:\n%s", s)
	}
}
