package packaging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/internal/shipped"
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
	env := []string{"DIST=" + dist, "SOURCE_DATE_EPOCH=1790000000"}
	if version != strings.TrimSpace(sh(t, ctx, nil, "./version.sh")) {
		env = append(env, "VERSION="+version)
	}
	out := sh(t, ctx, env, "./build-deb.sh", "amd64")
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

// unitFile parses a systemd unit into its settings, each key's values
// in order.
func unitFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			u[k] = append(u[k], v)
		}
	}
	return u
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// checkVersions runs -version of every installed program: each must tell
// the package's version.
func checkVersions(t *testing.T, ctx context.Context, root, version string) {
	t.Helper()
	for _, p := range []string{"usr/sbin/gatewayd", "usr/bin/gatewayctl", "usr/lib/gatewayd/plugins/gatewayd-http",
		"usr/lib/gatewayd/plugins/gatewayd-mqtt", "usr/lib/gatewayd/plugins/gatewayd-slipradio"} {
		want := filepath.Base(p) + " " + version
		if out := sh(t, ctx, nil, filepath.Join(root, p), "-version"); strings.TrimSpace(out) != want {
			t.Errorf("%s -version: %q, want %q", p, strings.TrimSpace(out), want)
		}
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // two package builds, on a busy machine
	defer cancel()

	dist := t.TempDir()
	// The first build takes its version from packaging/version.sh, as
	// `make deb` does.
	version := strings.TrimSpace(sh(t, ctx, nil, "./version.sh"))
	deb := buildDeb(t, ctx, dist, version)

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
			"usr/share/doc/gatewayd/README.md.gz", "usr/share/doc/gatewayd/examples/gatewayd.toml",
			"usr/lib/gatewayd/plugins/SHA256SUMS",
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

	t.Run("sandbox exposure is at most 1.5", func(t *testing.T) {
		out := sh(t, ctx, nil, analyze, "security", "--offline=yes", "--root="+root, "--no-pager", "gatewayd.service")
		m := exposureRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level in:\n%s", out)
		}
		score, err := strconv.ParseFloat(m[1], 64)
		if err != nil || score > 1.5 {
			t.Fatalf("exposure %s, want ≤ 1.5:\n%s", m[1], out)
		}
		t.Logf("exposure %.1f", score)
	})

	unit := unitFile(t, filepath.Join(root, "lib/systemd/system/gatewayd.service"))
	t.Run("the serial drivers are loaded before the unit resolves DeviceAllow", func(t *testing.T) {
		// char-ttyACM and char-ttyUSB name a device class only once its
		// driver is loaded: without these, a gateway booted without its
		// dongle never gets the radio until a restart.
		wants, after := strings.Fields(strings.Join(unit["Wants"], " ")), strings.Fields(strings.Join(unit["After"], " "))
		for _, mod := range []string{"cdc_acm", "usbserial", "ch341", "cp210x", "ftdi_sio"} {
			u := "modprobe@" + mod + ".service"
			if !slices.Contains(wants, u) || !slices.Contains(after, u) {
				t.Errorf("gatewayd.service does not want and order after %s", u)
			}
		}
		if !slices.Contains(unit["DeviceAllow"], "char-ttyACM rw") || !slices.Contains(unit["DeviceAllow"], "char-ttyUSB rw") {
			t.Errorf("DeviceAllow %q", unit["DeviceAllow"])
		}
	})

	t.Run("the radio links are named by serial number, not enumeration order", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "lib/udev/rules.d/70-gatewayd-radio.rules"))
		if err != nil {
			t.Fatal(err)
		}
		var links []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") || !strings.Contains(line, "SYMLINK") {
				continue
			}
			links = append(links, line)
			// %n, %k, $number and $kernel follow the kernel's ttyACM<n>.
			for _, unstable := range []string{"%n", "%k", "$number", "$kernel"} {
				if strings.Contains(line, unstable) {
					t.Errorf("a link named by %s: %s", unstable, line)
				}
			}
			if !strings.Contains(line, `ENV{ID_SERIAL_SHORT}=="?*"`) || !strings.Contains(line, "$env{ID_SERIAL_SHORT}") {
				t.Errorf("a link not named by the device's serial number: %s", line)
			}
		}
		if len(links) == 0 {
			t.Fatal("no SYMLINK in the rule")
		}
		conf, _ := os.ReadFile(filepath.Join(root, "etc/gatewayd/gatewayd.toml"))
		if !strings.Contains(string(conf), `#device = "/dev/serial/by-id/`) || strings.Contains(string(conf), "gatewayd-radio-0") {
			t.Error("the shipped config does not suggest a /dev/serial/by-id/ device")
		}
	})

	gatewayd := filepath.Join(root, "usr/sbin/gatewayd")
	config := filepath.Join(root, "etc/gatewayd/gatewayd.toml")

	t.Run("systemctl reload fails for a refused config and sends no SIGHUP", func(t *testing.T) {
		// What systemd does on reload: each ExecReload= line in turn, the
		// next only if the one before succeeded. The daemon is a stand-in
		// that SIGHUP ends: whether it is still alive says whether the
		// signal was sent.
		if len(unit["ExecReload"]) < 2 {
			t.Fatalf("ExecReload %q: want the check, then the signal", unit["ExecReload"])
		}
		reload := func(cfg string) (alive bool, err error) {
			daemon := startHUPDaemon(t)
			exited := make(chan error, 1)
			go func() { exited <- daemon.Wait() }()
			defer daemon.Process.Kill()
			for _, line := range unit["ExecReload"] {
				line = strings.NewReplacer("/usr/sbin/gatewayd", gatewayd, "/etc/gatewayd/gatewayd.toml", cfg,
					"$MAINPID", strconv.Itoa(daemon.Process.Pid)).Replace(line)
				f := strings.Fields(line)
				if out, err := exec.CommandContext(ctx, f[0], f[1:]...).CombinedOutput(); err != nil {
					return true, fmt.Errorf("%s: %v: %s", line, err, out)
				}
			}
			select {
			case <-exited:
				return false, nil
			case <-time.After(30 * time.Second):
				return true, nil
			}
		}
		bad := filepath.Join(t.TempDir(), "bad.toml")
		os.WriteFile(bad, []byte("[proxy]\ntimeout = \"-1s\"\n"), 0o644)
		alive, err := reload(bad)
		if err == nil || !strings.Contains(err.Error(), "timeout") || !alive {
			t.Fatalf("reload of a refused config: err %v, daemon alive %v; want the check's error and no SIGHUP", err, alive)
		}
		alive, err = reload(config)
		if err != nil || alive {
			t.Fatalf("reload of the shipped config: err %v, daemon alive %v; want SIGHUP sent", err, alive)
		}
	})
	t.Run("installed gatewayd accepts the shipped config", func(t *testing.T) {
		if out := sh(t, ctx, nil, gatewayd, "-check", "-config", config); !strings.Contains(out, "configuration ok") {
			t.Fatalf("-check: %s", out)
		}
		if out := sh(t, ctx, nil, gatewayd, "-version"); strings.TrimSpace(out) != "gatewayd "+version {
			t.Fatalf("-version: %q", out)
		}
	})

	t.Run("the installed programs are built as internal/shipped says", func(t *testing.T) {
		tagsRE := regexp.MustCompile(`(?m)^\s+build\s+-tags=(.*)$`)
		for _, p := range shipped.Programs {
			info := sh(t, ctx, nil, "go", "version", "-m", filepath.Join(root, p.Installed))
			got := ""
			if m := tagsRE.FindStringSubmatch(info); m != nil {
				got = m[1]
			}
			if got != p.Tags {
				t.Errorf("%s built with tags %q, want %q", p.Installed, got, p.Tags)
			}
		}
	})

	t.Run("the installed gatewayd has no demo, simulator or end-to-end code", func(t *testing.T) {
		// What the binary itself says it was built from: none of the
		// modules only the simulator (creack/pty) and the nodes' keys
		// (go-cose) bring.
		info := sh(t, ctx, nil, "go", "version", "-m", gatewayd)
		for _, mod := range []string{"github.com/creack/pty", "github.com/veraison/go-cose"} {
			if strings.Contains(info, "\t"+mod+"\t") {
				t.Errorf("gatewayd links %s:\n%s", mod, info)
			}
		}
		if !strings.Contains(info, "\tgo.bug.st/serial\t") {
			t.Errorf("go version -m lists no modules: the check above proves nothing:\n%s", info)
		}
		sim := filepath.Join(t.TempDir(), "sim.toml")
		if err := os.WriteFile(sim, []byte("[[radio]]\nname = \"s\"\ndriver = \"sim\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := shErr(ctx, nil, gatewayd, "-check", "-config", sim); err == nil || !strings.Contains(out, "this gatewayd has no simulator") {
			t.Errorf("-check of a sim radio: %v %q", err, out)
		}
	})

	t.Run("every program tells the package's version", func(t *testing.T) {
		checkVersions(t, ctx, root, version)
	})

	t.Run("the example config is valid", func(t *testing.T) {
		example := filepath.Join(root, "usr/share/doc/gatewayd/examples/gatewayd.toml")
		if out := sh(t, ctx, nil, gatewayd, "-check", "-check-plugins=false", "-config", example); !strings.Contains(out, "configuration ok") {
			t.Fatalf("-check: %s", out)
		}
	})

	t.Run("the copyright file names a licence for the project and every module", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "usr/share/doc/gatewayd/copyright"))
		if err != nil {
			t.Fatal(err)
		}
		c := string(b)
		if strings.Contains(strings.ToLower(c), "unlicensed") || !strings.Contains(c, "\nFiles: *\nCopyright: 2026 The gatewayd authors\nLicense: Apache-2.0\n") {
			t.Fatalf("the project's own paragraph:\n%.600s", c)
		}
		// Every module a shipped program links, as the program itself says.
		for _, prog := range []string{"usr/sbin/gatewayd", "usr/bin/gatewayctl", "usr/lib/gatewayd/plugins/gatewayd-mqtt"} {
			for _, line := range strings.Split(sh(t, ctx, nil, "go", "version", "-m", filepath.Join(root, prog)), "\n") {
				f := strings.Fields(line)
				if len(f) >= 3 && f[0] == "dep" && !strings.Contains(c, "\nFiles: "+f[1]+"/*\n") {
					t.Errorf("%s links %s %s, which the copyright file does not list", prog, f[1], f[2])
				}
			}
		}
	})

	t.Run("the shipped plugins' digests are in SHA256SUMS", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, "sha256sum", "--check", "--strict", "SHA256SUMS")
		cmd.Dir = filepath.Join(root, "usr/lib/gatewayd/plugins")
		out, err := cmd.CombinedOutput()
		for _, p := range []string{"gatewayd-http", "gatewayd-mqtt", "gatewayd-slipradio"} {
			if err != nil || !strings.Contains(string(out), p+": OK") {
				t.Errorf("SHA256SUMS does not vouch for %s: %v\n%s", p, err, out)
			}
		}
	})

	// The operator enables a shipped plugin without sha256, as the config
	// suggests; another pins the digest by hand, as for a plugin of one's
	// own. An upgrade rebuilds the plugins.
	plugin := filepath.Join(root, "usr/lib/gatewayd/plugins/gatewayd-http")
	pinned := filepath.Join(t.TempDir(), "pinned.toml")
	t.Run("upgrade keeps the edited conffile and the shipped plugins consistent", func(t *testing.T) {
		orig, err := os.ReadFile(config)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(orig), `timeout = "3s"`, `timeout = "7s"`, 1) +
			fmt.Sprintf("\n# edited on the gateway\n[[plugin]]\nname = \"http\"\npath = %q\n", plugin)
		if !strings.Contains(edited, `timeout = "7s"`) {
			t.Fatal(`shipped config has no timeout = "3s" line to edit`)
		}
		if err := os.WriteFile(config, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		before := fileSum(t, plugin)
		os.WriteFile(pinned, []byte(fmt.Sprintf("[[plugin]]\nname = \"http\"\npath = %q\nsha256 = %q\n", plugin, before)), 0o644)
		for _, c := range []string{config, pinned} {
			if out, err := shErr(ctx, nil, gatewayd, "-check", "-config", c); err != nil {
				t.Fatalf("-check %s before the upgrade: %v\n%s", c, err, out)
			}
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
		checkVersions(t, ctx, root, "0.2.0")
		if fileSum(t, plugin) == before {
			t.Fatal("the upgrade did not change the plugin; the test shows nothing")
		}
		// The plugin without sha256 is checked against the new SHA256SUMS,
		// and passes; the hand-pinned digest no longer matches, and -check
		// says so (the daemon would serve without that plugin).
		if out, err := shErr(ctx, nil, gatewayd, "-check", "-config", config); err != nil || !strings.Contains(out, "configuration ok") {
			t.Fatalf("-check of the edited conffile after the upgrade: %v\n%s", err, out)
		}
		if out, err := shErr(ctx, nil, gatewayd, "-check", "-config", pinned); err == nil || !strings.Contains(out, "sha256 mismatch") || !strings.Contains(out, before) {
			t.Fatalf("-check of a digest the upgrade made stale: %v\n%s", err, out)
		}
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
