package console

import (
	"log/slog"
	"strings"
	"testing"
)

// The ring keeps the last warnings and errors, newest first, with their
// attributes and groups, at a fixed size and length; info lines pass to
// the next handler only.
func TestRecentKeepsTheLastWarningsAndErrorsBounded(t *testing.T) {
	r := NewRecent(4)
	var out strings.Builder
	log := slog.New(r.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Info("started")
	comp := log.With("component", "radio").WithGroup("link")
	for i := range 10 {
		comp.Error("lost", "n", i)
	}
	log.Warn(strings.Repeat("x", 5000))
	got := r.Entries()
	if len(got) != 4 {
		t.Fatalf("%d entries, want 4", len(got))
	}
	if len(got[0].Message) > maxEntryLen+len("…") || !strings.HasSuffix(got[0].Message, "…") || got[0].Level != "WARN" {
		t.Errorf("newest: %d bytes, level %s", len(got[0].Message), got[0].Level)
	}
	if got[1].Message != "lost" || got[1].Attrs != "component=radio link.n=9" || got[3].Attrs != "component=radio link.n=7" {
		t.Errorf("entries %+v", got[1:])
	}
	for _, e := range got {
		if e.Message == "started" {
			t.Error("an info line was kept")
		}
	}
	if !strings.Contains(out.String(), "msg=started") || strings.Count(out.String(), "msg=lost") != 10 {
		t.Errorf("the next handler got:\n%s", out.String())
	}
}
