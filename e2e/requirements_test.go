package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The seed is not shipped; where it is readable (the project's shared
// specs), docs/seed-ids.txt must list exactly its identifiers.
const seedPath = "../../shared/draft-hartke-core-e2e-security-reqs-00.txt"

var (
	// PR1.1, SO1.4 (the seed's text also spells it S01.4), R1.10, NR3.6,
	// T1:3.11, and the four top-level threats T1: to T4:.
	idRE     = regexp.MustCompile(`\b(?:PR|SO|S0|NR|R)[0-9]+\.[0-9]+\b|\bT[0-9]:[0-9]+\.[0-9]+\b|\bT[1-4]:(?:[^0-9]|$)`)
	funcRE   = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
	statuses = []string{"holds", "partial", "not built", "pending"}
	// citeRE is one package's part of a "shown by" cell.
	citeRE = regexp.MustCompile(`^([a-z][a-z0-9]*): (Test[A-Za-z0-9_]+(?:, Test[A-Za-z0-9_]+)*)$`)
)

// testDirs maps the package names docs/REQUIREMENTS.md cites tests by to
// the folders of those packages.
var testDirs = map[string]string{
	"e2e":        "e2e",
	"bridge":     "bridge",
	"cache":      "cache",
	"observe":    "observe",
	"pubsub":     "observe/pubsub",
	"gatewayctl": "cmd/gatewayctl",
}

// seedIDs extracts the identifiers a seed text defines or cites.
func seedIDs(text string) []string {
	var ids []string
	for _, m := range idRE.FindAllString(text, -1) {
		m = strings.TrimRight(m, " \t\n.,;)")
		if len(m) > 3 && m[0] == 'T' && m[2] == ':' && (m[3] < '0' || m[3] > '9') {
			m = m[:3] // "T3:The proxy" → "T3:"
		}
		if strings.HasPrefix(m, "S0") {
			m = "SO" + m[2:]
		}
		m = strings.TrimSuffix(m, ":")
		if !slices.Contains(ids, m) {
			ids = append(ids, m)
		}
	}
	slices.Sort(ids)
	return ids
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// testFuncsIn finds the Test functions of the _test files in one folder
// of the repository (not in its subfolders): the tests of one package.
func testFuncsIn(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", dir))
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("..", dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range funcRE.FindAllStringSubmatch(string(b), -1) {
			funcs[m[1]] = true
		}
	}
	return funcs
}

// citations parses a "shown by" cell, "pkg: TestA, TestB; pkg2: TestC",
// into the tests it names by package. Anything else in the cell is an
// error: every test is named with its package.
func citations(cell string) (map[string][]string, error) {
	out := map[string][]string{}
	cell = strings.TrimSpace(cell)
	if cell == "" {
		return out, nil
	}
	for _, part := range strings.Split(cell, ";") {
		m := citeRE.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			return nil, fmt.Errorf("%q is not \"package: TestA, TestB\"", strings.TrimSpace(part))
		}
		out[m[1]] = append(out[m[1]], strings.Split(m[2], ", ")...)
	}
	return out, nil
}

// seedIDsDigest is the SHA-256 of docs/seed-ids.txt's identifiers, sorted,
// one per line, as last checked against the seed. Where the seed is not
// readable (users do not have it) the list is held to this digest; where it
// is, the list is held to the seed and the digest to the list.
const seedIDsDigest = "21607b746d8a8e913905b5813e94349f4ea64f29f39bfd349524dccae973342d"

func idsDigest(ids []string) string {
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n") + "\n"))
	return hex.EncodeToString(sum[:])
}

func TestSeedIDsListMatchesTheSeed(t *testing.T) {
	got := readLines(t, "../docs/seed-ids.txt")
	slices.Sort(got)
	for i, id := range got {
		// The seed names the top-level threats "T1:" and so on; the list
		// keeps them as "T1".
		if ids := seedIDs(id + ": "); len(ids) != 1 || ids[0] != id {
			t.Errorf("seed-ids.txt: %q is not a seed identifier", id)
		}
		if i > 0 && got[i-1] == id {
			t.Errorf("seed-ids.txt lists %s twice", id)
		}
	}
	if d := idsDigest(got); d != seedIDsDigest {
		t.Errorf("seed-ids.txt changed: digest %s, want %s (check it against the seed and update seedIDsDigest)", d, seedIDsDigest)
	}
	text, err := os.ReadFile(seedPath)
	if err != nil {
		t.Logf("seed not readable here (%v): the list is held to the digest of its last check", err)
		return
	}
	want := seedIDs(string(text))
	if !slices.Equal(got, want) {
		for _, id := range want {
			if !slices.Contains(got, id) {
				t.Errorf("seed-ids.txt lacks %s", id)
			}
		}
		for _, id := range got {
			if !slices.Contains(want, id) {
				t.Errorf("seed-ids.txt has %s, which the seed does not", id)
			}
		}
	}
}

func TestRequirementsTableIsComplete(t *testing.T) {
	ids := readLines(t, "../docs/seed-ids.txt")
	if len(ids) < 100 {
		t.Fatalf("seed-ids.txt lists %d identifiers; the seed has well over 100", len(ids))
	}
	funcs := map[string]map[string]bool{} // package → its Test functions
	for pkg, dir := range testDirs {
		funcs[pkg] = testFuncsIn(t, dir)
	}
	rows := map[string]bool{}
	for _, line := range readLines(t, "../docs/REQUIREMENTS.md") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if !strings.HasPrefix(line, "|") || len(cells) != 3 {
			continue
		}
		id := strings.TrimSpace(cells[0])
		if !slices.Contains(ids, id) {
			continue // header and separator rows
		}
		if rows[id] {
			t.Errorf("%s has two rows", id)
		}
		rows[id] = true
		status := strings.TrimSpace(cells[2])
		ok := false
		for _, s := range statuses {
			ok = ok || strings.HasPrefix(status, s)
		}
		if !ok {
			t.Errorf("%s: status %q is none of %q", id, status, statuses)
		}
		cited, err := citations(cells[1])
		if err != nil {
			t.Errorf("%s: %v", id, err)
			continue
		}
		tests := 0
		for pkg, names := range cited {
			if funcs[pkg] == nil {
				t.Errorf("%s: unknown package %q (known: those of testDirs)", id, pkg)
				continue
			}
			for _, name := range names {
				tests++
				if !funcs[pkg][name] {
					t.Errorf("%s: package %s (%s/) has no test function %s", id, pkg, testDirs[pkg], name)
				}
			}
		}
		if tests == 0 && (strings.HasPrefix(status, "holds") || strings.HasPrefix(status, "partial")) {
			t.Errorf("%s: status %q needs a test", id, status)
		}
	}
	for _, id := range ids {
		if !rows[id] {
			t.Errorf("docs/REQUIREMENTS.md has no row for %s", id)
		}
	}
}
