package signed

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsEverySentinel keeps the error list true.
func TestREADMEListsEverySentinel(t *testing.T) {
	readme := readFile(t, "README.md")
	src := readFile(t, "errors.go")
	names := regexp.MustCompile(`(?m)^\t(Err\w+)\s+=\s+errors\.New\("signed: `).FindAllStringSubmatch(src, -1)
	if len(names) == 0 {
		t.Fatal("no sentinels found in errors.go")
	}
	for _, n := range names {
		if !strings.Contains(readme, "`"+n[1]+"`") {
			t.Errorf("README does not list %s", n[1])
		}
	}
}

// TestREADMEHeaderTable keeps the documented labels and content formats
// equal to the constants.
func TestREADMEHeaderTable(t *testing.T) {
	readme := readFile(t, "README.md")
	for _, row := range []string{
		fmt.Sprintf("| %d | resource URI (`HeaderLabelURI`) | tstr |", HeaderLabelURI),
		fmt.Sprintf("| %d | counter (`HeaderLabelCounter`) |", HeaderLabelCounter),
		fmt.Sprintf("| %d | time (`HeaderLabelTime`) |", HeaderLabelTime),
		fmt.Sprintf("| 2 | crit | `[%d, %d, %d]` |", critLabels[0], critLabels[1], critLabels[2]),
		fmt.Sprintf("Content-Format **%d** (`application/cose; cose-type=\"cose-sign1\"`", ContentFormatCOSESign1),
		fmt.Sprintf("Content-Format **%d** (`cose-type=\"cose-encrypt0\"`", ContentFormatCOSEEncrypt0),
		fmt.Sprintf("default %d)", DefaultMaxEntries),
		fmt.Sprintf("default %d)", DefaultMaxKeys),
	} {
		if !strings.Contains(readme, row) {
			t.Errorf("README lacks %q", row)
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
