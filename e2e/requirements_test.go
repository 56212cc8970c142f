package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
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
	testRE   = regexp.MustCompile(`\bTest[A-Za-z0-9_]+`)
	funcRE   = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
	statuses = []string{"holds", "partial", "not built", "pending"}
)

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

// testFuncs finds every Test function in the repository's _test files.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	funcs := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range funcRE.FindAllStringSubmatch(string(b), -1) {
				funcs[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return funcs
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
	funcs := testFuncs(t)
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
		tests := testRE.FindAllString(cells[1], -1)
		for _, name := range tests {
			if !funcs[name] {
				t.Errorf("%s: no test function %s in the repository", id, name)
			}
		}
		if len(tests) == 0 && (strings.HasPrefix(status, "holds") || strings.HasPrefix(status, "partial")) {
			t.Errorf("%s: status %q needs a test", id, status)
		}
	}
	for _, id := range ids {
		if !rows[id] {
			t.Errorf("docs/REQUIREMENTS.md has no row for %s", id)
		}
	}
}
