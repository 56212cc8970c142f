package bridge

import (
	"os"
	"strings"
	"testing"
)

// The configuration example of the top README is a valid configuration:
// the README stays true when keys change.
func TestREADMEConfigExampleIsValid(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "```toml\n")
	if i < 0 {
		t.Fatal("README has no toml example")
	}
	s = s[i+len("```toml\n"):]
	example := s[:strings.Index(s, "```")]
	if _, err := Parse("README.md", []byte(example)); err != nil {
		t.Fatalf("the README's configuration example: %v", err)
	}
	for _, key := range []string{"[proxy]", "[[route]]", "[[radio]]", "[cache]", "[observe]", "[pubsub]", "[rd]", "[metrics]", "[[plugin]]"} {
		if !strings.Contains(example, key) {
			t.Errorf("the README's example does not show %s", key)
		}
	}
}
