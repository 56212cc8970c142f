package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// need finds a tool the test command installs (scripts/test-deps.sh): a
// missing one is a failure, not a skip.
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make deps` (Debian package %s)", name, pkg)
	}
	return p
}

// sh runs a command and returns its combined output; failure is fatal.
func sh(t *testing.T, ctx context.Context, env []string, name string, args ...string) string {
	t.Helper()
	out, err := shErr(ctx, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func shErr(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// buildDeb runs build-deb.sh for amd64 at version and returns the .deb.
func buildDeb(t *testing.T, ctx context.Context, dist, version string) string {
	t.Helper()
	out := sh(t, ctx, []string{"VERSION=" + version, "DIST=" + dist, "SOURCE_DATE_EPOCH=1790000000"},
		"./build-deb.sh", "amd64")
	deb := filepath.Join(dist, "gatewayd_"+version+"-1_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("build-deb.sh did not leave %s:\n%s", deb, out)
	}
	return deb
}

// dpkgRoot is an empty dpkg database and file system for installing
// without a chroot, plus what systemd-analyze needs to load units there:
// the host's own units (targets the service refers to) and /bin/kill.
func dpkgRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info", "usr/lib/systemd/system", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	sh(t, ctx, nil, "cp", "-a", "/usr/lib/systemd/system/.", filepath.Join(root, "usr/lib/systemd/system"))
	sh(t, ctx, nil, "cp", need(t, "kill", "procps"), filepath.Join(root, "bin/kill"))
	return root
}

func dpkg(t *testing.T, ctx context.Context, root string, args ...string) string {
	t.Helper()
	base := []string{"--root=" + root, "--force-script-chrootless", "--force-not-root",
		"--force-depends", "--force-confdef", "--force-confold"}
	return sh(t, ctx, nil, "dpkg", append(base, args...)...)
}

func query(t *testing.T, ctx context.Context, root, format string) string {
	t.Helper()
	return sh(t, ctx, nil, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"),
		"-W", "-f="+format, "gatewayd")
}

var exposureRE = regexp.MustCompile(`Overall exposure level for gatewayd\.service: ([0-9.]+)`)

// TestDebianPackageBuildsLintsInstallsAndUpgrades is the package's whole
// life on a gateway, minus a running systemd: build, lintian, unit
// verification and sandbox score, install into a scratch root through the
// maintainer scripts, the installed daemon accepting its own default
// config, and an upgrade that keeps the operator's edited conffile.
func TestDebianPackageBuildsLintsInstallsAndUpgrades(t *testing.T) {
	lintian := need(t, "lintian", "lintian")
	analyze := need(t, "systemd-analyze", "systemd")
	need(t, "dpkg", "dpkg")
	need(t, "dpkg-query", "dpkg")
	need(t, "systemd-sysusers", "systemd")
	need(t, "deb-systemd-helper", "init-system-helpers")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dist := t.TempDir()
	deb := buildDeb(t, ctx, dist, "0.1.0")

	t.Run("lintian reports no errors or warnings", func(t *testing.T) {
		out, err := shErr(ctx, nil, lintian, "--fail-on", "error,warning", deb)
		var bad []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
				bad = append(bad, line)
			}
		}
		if err != nil || len(bad) > 0 {
			t.Fatalf("lintian: %v\n%s", err, out)
		}
	})

	root := dpkgRoot(t)
	dpkg(t, ctx, root, "-i", deb)

	t.Run("installed files and conffiles", func(t *testing.T) {
		for _, f := range []string{
			"usr/sbin/gatewayd", "usr/lib/gatewayd/plugins",
			"etc/gatewayd/gatewayd.toml", "etc/default/gatewayd",
			"lib/systemd/system/gatewayd.service", "lib/systemd/system/gatewayd.socket",
			"usr/lib/sysusers.d/gatewayd.conf", "usr/lib/tmpfiles.d/gatewayd.conf",
			"lib/udev/rules.d/70-gatewayd-radio.rules",
			"usr/share/man/man8/gatewayd.8.gz", "usr/share/man/man5/gatewayd.toml.5.gz",
			"usr/share/doc/gatewayd/copyright", "usr/share/doc/gatewayd/changelog.Debian.gz",
		} {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("missing /%s: %v", f, err)
			}
		}
		for _, f := range []string{
			"usr/bin/gatewayctl", "usr/share/man/man1/gatewayctl.1.gz",
			"usr/lib/gatewayd/plugins/gatewayd-http", "usr/lib/gatewayd/plugins/gatewayd-mqtt",
			"usr/lib/gatewayd/plugins/gatewayd-slipradio",
		} {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("missing /%s: %v", f, err)
			}
		}
		if fi, err := os.Stat(filepath.Join(root, "usr/sbin/gatewayd")); err == nil && fi.Mode().Perm() != 0o755 {
			t.Errorf("/usr/sbin/gatewayd mode %v", fi.Mode())
		}
		conf := query(t, ctx, root, "${Conffiles}")
		for _, f := range []string{"/etc/gatewayd/gatewayd.toml", "/etc/default/gatewayd"} {
			if !strings.Contains(conf, " "+f+" ") {
				t.Errorf("%s is not a conffile:\n%s", f, conf)
			}
		}
		if st := query(t, ctx, root, "${Status}"); st != "install ok installed" {
			t.Errorf("status %q", st)
		}
	})

	t.Run("postinst made the user and enabled the service", func(t *testing.T) {
		passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if !regexp.MustCompile(`(?m)^gatewayd:x:\d+:\d+:[^:]*:/var/lib/gatewayd:/usr/sbin/nologin$`).Match(passwd) {
			t.Errorf("no gatewayd system user in /etc/passwd:\n%s", passwd)
		}
		if fi, err := os.Stat(filepath.Join(root, "var/lib/gatewayd")); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("/var/lib/gatewayd: %v %v", fi, err)
		}
		link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/gatewayd.service")
		if dst, err := os.Readlink(link); err != nil || dst != "/lib/systemd/system/gatewayd.service" {
			t.Errorf("gatewayd.service not enabled: %q %v", dst, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/sockets.target.wants/gatewayd.socket")); err == nil {
			t.Error("gatewayd.socket enabled by default; it is opt-in")
		}
	})

	t.Run("systemd-analyze verify is clean", func(t *testing.T) {
		out := sh(t, ctx, nil, analyze, "verify", "--man=no", "--root="+root,
			"gatewayd.service", "gatewayd.socket")
		if strings.TrimSpace(out) != "" {
			t.Fatalf("systemd-analyze verify:\n%s", out)
		}
	})

	t.Run("sandbox exposure is at most 2.0", func(t *testing.T) {
		out := sh(t, ctx, nil, analyze, "security", "--offline=yes", "--root="+root, "--no-pager", "gatewayd.service")
		m := exposureRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level in:\n%s", out)
		}
		score, err := strconv.ParseFloat(m[1], 64)
		if err != nil || score > 2.0 {
			t.Fatalf("exposure %s, want ≤ 2.0:\n%s", m[1], out)
		}
		t.Logf("exposure %.1f", score)
	})

	gatewayd := filepath.Join(root, "usr/sbin/gatewayd")
	config := filepath.Join(root, "etc/gatewayd/gatewayd.toml")
	t.Run("installed gatewayd accepts the shipped config", func(t *testing.T) {
		if out := sh(t, ctx, nil, gatewayd, "-check", "-config", config); !strings.Contains(out, "configuration ok") {
			t.Fatalf("-check: %s", out)
		}
		if out := sh(t, ctx, nil, gatewayd, "-version"); strings.TrimSpace(out) != "gatewayd 0.1.0" {
			t.Fatalf("-version: %q", out)
		}
	})

	t.Run("upgrade keeps the edited conffile", func(t *testing.T) {
		orig, err := os.ReadFile(config)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(orig), `timeout = "3s"`, `timeout = "7s"`, 1) + "\n# edited on the gateway\n"
		if edited == string(orig)+"\n# edited on the gateway\n" {
			t.Fatal(`shipped config has no timeout = "3s" line to edit`)
		}
		if err := os.WriteFile(config, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		deb2 := buildDeb(t, ctx, dist, "0.2.0")
		dpkg(t, ctx, root, "-i", deb2)
		if v := query(t, ctx, root, "${Version}"); v != "0.2.0-1" {
			t.Fatalf("installed version %q after upgrade", v)
		}
		got, _ := os.ReadFile(config)
		if string(got) != edited {
			t.Fatalf("upgrade replaced the edited conffile:\n%s", got)
		}
		if out := sh(t, ctx, nil, gatewayd, "-version"); strings.TrimSpace(out) != "gatewayd 0.2.0" {
			t.Fatalf("-version after upgrade: %q", out)
		}
		sh(t, ctx, nil, gatewayd, "-check", "-config", config)
	})

	t.Run("purge removes state and conffiles", func(t *testing.T) {
		state := filepath.Join(root, "var/lib/gatewayd")
		os.WriteFile(filepath.Join(state, "leftover"), []byte("x"), 0o600)
		dpkg(t, ctx, root, "--purge", "gatewayd")
		for _, f := range []string{"var/lib/gatewayd", "etc/gatewayd/gatewayd.toml", "usr/sbin/gatewayd",
			"etc/systemd/system/multi-user.target.wants/gatewayd.service"} {
			if _, err := os.Lstat(filepath.Join(root, f)); err == nil {
				t.Errorf("/%s survived purge", f)
			}
		}
	})
}
