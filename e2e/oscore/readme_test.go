package oscore

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEFileExampleParses keeps the file format section true.
func TestREADMEFileExampleParses(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) != 1 {
		t.Fatalf("found %d toml blocks, want 1", len(blocks))
	}
	cfg, err := ParseConfig(blocks[0][1])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.SeqStore.(FileSeqStore); !ok || !cfg.SendKIDContext || cfg.ReplayWindow != 32 {
		t.Errorf("README example parsed as %+v", cfg)
	}
	cfg.SeqStore = nil
	if _, err := NewContext(cfg); err != nil {
		t.Error(err)
	}
}

// TestREADMEListsEverySentinel keeps the error list true.
func TestREADMEListsEverySentinel(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("errors.go")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?m)^\t(Err\w+)\s+=\s+errors\.New\("oscore: `).FindAllSubmatch(src, -1)
	if len(names) == 0 {
		t.Fatal("no sentinels found in errors.go")
	}
	for _, n := range names {
		if !strings.Contains(string(b), "`"+string(n[1])+"`") {
			t.Errorf("README does not list %s", n[1])
		}
	}
}
