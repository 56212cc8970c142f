package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// gatewayd(8) documents every flag, the signals and the files the
// package installs. (Its metrics are checked against the registry in
// bridge, its configuration keys in gatewayd.toml(5) against the structs.)
func TestManPageDocumentsFlagsSignalsAndFiles(t *testing.T) {
	b, err := os.ReadFile("../../packaging/man/gatewayd.8")
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(b), `\-`, "-")
	var usage bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &bytes.Buffer{}, &usage); err != nil {
		t.Fatalf("-h: %v", err)
	}
	flags := regexp.MustCompile(`(?m)^  (-[a-z][a-z-]*)`).FindAllStringSubmatch(usage.String(), -1)
	if len(flags) < 6 {
		t.Fatalf("only %d flags in:\n%s", len(flags), usage.String())
	}
	for _, f := range flags {
		if !regexp.MustCompile(`\.BI? ` + regexp.QuoteMeta(f[1]) + `\b`).MatchString(page) {
			t.Errorf("gatewayd(8) does not document %s", f[1])
		}
	}
	for _, want := range []string{
		".B SIGHUP", ".BR SIGTERM \", \" SIGINT",
		"/etc/gatewayd/gatewayd.toml", "/etc/default/gatewayd", "/var/lib/gatewayd",
		"/usr/lib/gatewayd/plugins/SHA256SUMS", "/usr/share/doc/gatewayd/examples/gatewayd.toml",
		"/lib/udev/rules.d/70-gatewayd-radio.rules", ".SH METRICS", "gatewayd_build_info",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("gatewayd(8) lacks %q", want)
		}
	}
}
