package packaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A later commit always gets a version dpkg sorts higher: before any tag,
// and after one; and many commits of one day too, whose order a date and
// a hash would leave to chance.
func TestVersionOfALaterCommitSortsHigher(t *testing.T) {
	need(t, "git", "git")
	need(t, "dpkg", "dpkg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script, err := filepath.Abs("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	env := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1"}
	git := func(args ...string) {
		t.Helper()
		sh(t, ctx, env, "git", append([]string{"-C", repo}, args...)...)
	}
	if got := strings.TrimSpace(sh(t, ctx, nil, script, repo)); got != "0.0.0~unknown" {
		t.Fatalf("outside a checkout: %q", got)
	}
	git("init", "-q")
	var versions []string
	commit := func(i int) {
		t.Helper()
		os.WriteFile(filepath.Join(repo, "f"), []byte(fmt.Sprint(i)), 0o644)
		git("add", "f")
		// The same minute for every commit: one day's work.
		date := fmt.Sprintf("2026-12-03T10:%02d:00Z", i)
		sh(t, ctx, append(env, "GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date), "git", "-C", repo, "commit", "-q", "-m", fmt.Sprint(i))
		versions = append(versions, strings.TrimSpace(sh(t, ctx, nil, script, repo)))
	}
	for i := range 12 {
		commit(i)
	}
	git("tag", "v0.3.0")
	versions = append(versions, strings.TrimSpace(sh(t, ctx, nil, script, repo)))
	for i := 12; i < 15; i++ {
		commit(i)
	}
	valid := regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`) // Debian policy 5.6.12, no hyphen: the revision follows
	for i, v := range versions {
		if !valid.MatchString(v) {
			t.Errorf("%q is no Debian upstream version", v)
		}
		if i == 0 {
			continue
		}
		if err := exec.CommandContext(ctx, "dpkg", "--compare-versions", versions[i-1]+"-1", "lt", v+"-1").Run(); err != nil {
			t.Errorf("dpkg sorts %s (commit %d) below %s (commit %d)", v, i, versions[i-1], i-1)
		}
	}
	if !strings.HasPrefix(versions[0], "0.0.0~git1.") || versions[12] != "0.3.0" || !strings.HasPrefix(versions[13], "0.3.0+git1.") {
		t.Errorf("versions: %q", versions)
	}
}
