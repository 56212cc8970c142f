package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// flagNames are the flags a usage text lists ("  -name ...").
var flagNames = regexp.MustCompile(`(?m)^  (-[a-z][a-z-]*)`)

// gatewayctl(1) documents every command of the usage and every flag of
// each: the man page cannot fall behind the tool.
func TestManPageDocumentsEveryCommandAndFlag(t *testing.T) {
	b, err := os.ReadFile("../../packaging/man/gatewayctl.1")
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(b), `\-`, "-")
	commands := regexp.MustCompile(`(?m)^  gatewayctl ((?:keys )?-?[a-z0-9]+)`).FindAllStringSubmatch(topUsage, -1)
	if len(commands) < 9 {
		t.Fatalf("only %d commands in the usage", len(commands))
	}
	for _, c := range commands {
		cmd := c[1]
		if !strings.Contains(page, cmd) {
			t.Errorf("gatewayctl(1) does not document the command %q", cmd)
		}
		if strings.HasPrefix(cmd, "-") {
			continue
		}
		var errb bytes.Buffer
		if code := run(context.Background(), append(strings.Fields(cmd), "-h"), &bytes.Buffer{}, &errb); code != exitOK {
			t.Fatalf("%s -h: exit %d\n%s", cmd, code, errb.String())
		}
		flags := flagNames.FindAllStringSubmatch(errb.String(), -1)
		if len(flags) == 0 {
			t.Fatalf("%s -h lists no flags:\n%s", cmd, errb.String())
		}
		for _, f := range flags {
			if !regexp.MustCompile(`\.BI? ` + regexp.QuoteMeta(f[1]) + `\b`).MatchString(page) {
				t.Errorf("gatewayctl(1) does not document %s of %s", f[1], cmd)
			}
		}
	}
}
