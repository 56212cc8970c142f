package rd

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock/clocktest"
	"github.com/opaque-edge/gatewayd/internal/testutil"
)

// Registrations survive a restart: the same locations, links, owners
// (the name is still refused to another client) and lifetimes (one that
// ran out while the directory was down is gone, its file removed).
func TestRestartKeepsRegistrations(t *testing.T) {
	cfg := testConfig(t)
	c := clocktest.New(epoch)
	r := openRig(t, cfg, c)
	loc := r.register(node1, "ep=node1&lt=600&et=sensor", sensorDoc)
	r.register(node2, "ep=short&lt=60", "</x>")
	before := r.get("/rd-lookup/res")
	r.d.Close()

	c.Advance(120 * time.Second) // short's lifetime ends while down
	r2 := openRig(t, cfg, c)
	if got := r2.get("/rd-lookup/res"); got != strings.Split(before, ",<coap://[fd00:db8:1::2]")[0] {
		t.Fatalf("after the restart:\n got %s\nwant %s", got, before)
	}
	if eps := r2.d.Endpoints(); len(eps) != 1 || eps[0].Location != loc || eps[0].Left != 480*time.Second {
		t.Fatalf("endpoints after the restart: %+v", eps)
	}
	if _, ok := r2.d.Route("node1"); !ok {
		t.Fatal("no route after the restart")
	}
	wantCode(t, "takeover after the restart", r2.from(context.Background(), node2, msg(coap.POST, "/rd?ep=node1", "</evil>")), coap.Forbidden)
	wantCode(t, "the owner updates", r2.from(context.Background(), node1, msg(coap.POST, loc, "")), coap.Changed)
	files, _ := filepath.Glob(filepath.Join(cfg.StateDir, "reg-*.json"))
	if len(files) != 1 || r2.d.Stats().Expired != 1 {
		t.Fatalf("state files %v, expired %d", files, r2.d.Stats().Expired)
	}
	c.Advance(599 * time.Second)
	if r2.d.Stats().Registrations != 1 {
		t.Fatal("the update after the restart did not restart the lifetime")
	}
	c.Advance(time.Second)
	if files, _ := filepath.Glob(filepath.Join(cfg.StateDir, "reg-*.json")); len(files) != 0 {
		t.Fatalf("expired state files left: %v", files)
	}
}

// Every acknowledged change is on disk before the answer: a directory
// opened on the state files alone, at any point, has what was answered.
func TestAcknowledgedChangesAreOnDisk(t *testing.T) {
	cfg := testConfig(t)
	c := clocktest.New(epoch)
	r := openRig(t, cfg, c)
	reopen := func() *Directory {
		d, err := New(cfg, WithClock(c))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d
	}
	loc := r.register(node1, "ep=a", "</1>")
	if n := reopen().Stats().Registrations; n != 1 {
		t.Fatalf("after the 2.01: %d on disk", n)
	}
	wantCode(t, "update", r.from(context.Background(), node1, msg(coap.POST, loc+"?base=coap://[fd00:db8:1::42]", "")), coap.Changed)
	if eps := reopen().Endpoints(); len(eps) != 1 || eps[0].Base != "coap://[fd00:db8:1::42]" {
		t.Fatalf("after the update: %+v", eps)
	}
	wantCode(t, "remove", r.from(context.Background(), node1, msg(coap.DELETE, loc, "")), coap.Deleted)
	if n := reopen().Stats().Registrations; n != 0 {
		t.Fatalf("after the 2.02: %d on disk", n)
	}
}

// State files that cannot be used are counted and skipped; the others
// load; temporary files of an interrupted write are removed.
func TestBadStateFilesAreSkipped(t *testing.T) {
	cfg := testConfig(t)
	c := clocktest.New(epoch)
	r := openRig(t, cfg, c)
	r.register(node1, "ep=good", "</1>")
	r.d.Close()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(cfg.StateDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := filepath.Glob(filepath.Join(cfg.StateDir, "reg-*.json"))
	raw, _ := os.ReadFile(good[0])
	write("reg-00000001.json", "{not json")
	write("reg-00000002.json", strings.Replace(string(raw), `"version":1`, `"version":9`, 1))
	write("reg-00000003.json", strings.Replace(string(raw), `"links":"\u003c/1\u003e"`, `"links":"\u003crelative\u003e"`, 1))
	write("reg-00000004.json", strings.Replace(string(raw), `"ep":"good"`, `"ep":"bad\u0007"`, 1))
	write("reg-00000005.json", string(raw)) // the same id again
	write(".reg-123.tmp", "half written")
	if err := os.Mkdir(filepath.Join(cfg.StateDir, "reg-00000006.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	r2 := openRig(t, cfg, c, WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	if s := r2.d.Stats(); s.Registrations != 1 || s.BadStateFiles != 6 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, ".reg-123.tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	r2.d.Close() // its log is complete
	for _, n := range []string{"1", "2", "3", "4", "6"} {
		if name := "reg-0000000" + n + ".json"; !strings.Contains(log.String(), name) {
			t.Errorf("the log does not name %s:\n%s", name, log.String())
		}
	}
}

// A restart under a lower max_registrations_per_client keeps as many of a
// client's registrations as it allows, skips the rest as bad state files,
// and counts the ones kept against the client.
func TestRestartKeepsThePerClientBound(t *testing.T) {
	cfg := testConfig(t)
	c := clocktest.New(epoch)
	r := openRig(t, cfg, c)
	for _, ep := range []string{"a", "b", "c"} {
		r.register(node1, "ep="+ep, "</x>")
	}
	r.register(node2, "ep=other", "</x>")
	r.d.Close()

	cfg.MaxRegistrationsPerClient = 2
	r2 := openRig(t, cfg, c)
	if s := r2.d.Stats(); s.Registrations != 3 || s.BadStateFiles != 1 {
		t.Fatalf("after the restart: %+v", s)
	}
	wantCode(t, "a new one over the bound", r2.from(context.Background(), node1, msg(coap.POST, "/rd?ep=d", "</x>")), coap.Forbidden)
	r2.register(node2, "ep=other2", "</x>")
}

// A state directory as the daemon wrote it before its store moved to
// internal/filestore (testdata/state-v1, written by that code) loads
// whole; written again, every record is the same file, byte for byte,
// under the same name, mode 0600.
func TestStateDirectoryOfVersion1LoadsAndIsRewrittenByteForByte(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateDir = testutil.CopyDir(t, filepath.Join("testdata", "state-v1"))
	r := openRig(t, cfg, clocktest.New(epoch))
	eps := r.d.Endpoints()
	if s := r.d.Stats(); s.Registrations != 2 || s.BadStateFiles != 0 || len(eps) != 2 {
		t.Fatalf("stats %+v, endpoints %+v", s, eps)
	}
	byName := map[string]Endpoint{eps[0].Name: eps[0], eps[1].Name: eps[1]}
	if e := byName["node1"]; e.Location != "/rd/b3875810" || e.Left != 600*time.Second || len(e.Links) != 2 || e.From != node1 {
		t.Fatalf("node1: %+v", e)
	}
	if e := byName["node2"]; e.Location != "/rd/5fb1f67c" || e.Sector != "floor1" || e.Base != "coap://[fd00:db8:1::42]" {
		t.Fatalf("node2: %+v", e)
	}
	testutil.EmptyDir(t, cfg.StateDir) // written again by the code of now
	r.d.mu.Lock()
	regs := slices.Collect(maps.Values(r.d.regs))
	r.d.mu.Unlock()
	for _, reg := range regs {
		if err := r.d.save(reg); err != nil {
			t.Fatal(err)
		}
	}
	testutil.SameFiles(t, cfg.StateDir, filepath.Join("testdata", "state-v1"), 0o600)
}
