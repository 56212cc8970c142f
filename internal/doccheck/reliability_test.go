package doccheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/RELIABILITY.md stays true: every test, fuzz target and benchmark it
// names exists, and every fuzz target of the module is in it, so that a
// new one is recorded with the others.
func TestReliabilityDocNamesWhatExists(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "RELIABILITY.md"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	var fuzz []string
	funcRE := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)\(`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllStringSubmatch(string(b), -1) {
			defined[m[1]] = true
			if strings.HasPrefix(m[1], "Fuzz") {
				fuzz = append(fuzz, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(named) < 20 {
		t.Fatalf("RELIABILITY.md names only %d tests", len(named))
	}
	for _, m := range named {
		if !defined[m[1]] {
			t.Errorf("RELIABILITY.md names %s, which does not exist", m[1])
		}
	}
	for _, f := range fuzz {
		if !strings.Contains(string(doc), "`"+f+"`") {
			t.Errorf("fuzz target %s is not in RELIABILITY.md", f)
		}
	}
}
