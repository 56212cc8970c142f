package console

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"unicode/utf8"
)

// DefaultRecent is how many log records a Recent keeps.
const DefaultRecent = 50

// maxEntryLen bounds one kept record's message and attributes, in bytes.
const maxEntryLen = 1024

// Recent keeps the last warnings and errors a logger wrote, for the
// console's "last errors": a ring of fixed size, so a burst of errors
// costs the same memory as none. What reaches it is already rate-limited
// where a peer can trigger it (drop logs, plugin logs).
type Recent struct {
	mu      sync.Mutex
	entries []LogEntry // guarded by mu: a ring
	next    int        // guarded by mu
	full    bool       // guarded by mu
}

// NewRecent returns a Recent that keeps the last n records (DefaultRecent
// if n ≤ 0).
func NewRecent(n int) *Recent {
	if n <= 0 {
		n = DefaultRecent
	}
	return &Recent{entries: make([]LogEntry, n)}
}

// Entries returns the kept records, newest first.
func (r *Recent) Entries() []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.entries)
	}
	out := make([]LogEntry, 0, n)
	for i := range n {
		out = append(out, r.entries[(r.next-1-i+len(r.entries))%len(r.entries)])
	}
	return out
}

func (r *Recent) add(e LogEntry) {
	r.mu.Lock()
	r.entries[r.next] = e
	r.next = (r.next + 1) % len(r.entries)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// Handler returns a slog.Handler that keeps the records of level Warn
// and above in r and passes every record next is enabled for to next.
func (r *Recent) Handler(next slog.Handler) slog.Handler {
	return &recentHandler{r: r, next: next}
}

type recentHandler struct {
	r      *Recent
	next   slog.Handler
	prefix string // attributes from WithAttrs, formatted
	group  string // from WithGroup, with a trailing "."
}

func (h *recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *recentHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(h.prefix)
		rec.Attrs(func(a slog.Attr) bool {
			appendAttr(&b, h.group, a)
			return b.Len() < maxEntryLen
		})
		h.r.add(LogEntry{Time: rec.Time, Level: rec.Level.String(), Message: truncate(rec.Message), Attrs: truncate(b.String())})
	}
	if h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

func (h *recentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		appendAttr(&b, h.group, a)
	}
	return &recentHandler{r: h.r, next: h.next.WithAttrs(as), prefix: truncate(b.String()), group: h.group}
}

func (h *recentHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &recentHandler{r: h.r, next: h.next.WithGroup(name), prefix: h.prefix, group: h.group + name + "."}
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, g, ga)
		}
		return
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(a.Value.String())
}

// truncate cuts s to maxEntryLen bytes at a rune boundary.
func truncate(s string) string {
	if len(s) <= maxEntryLen {
		return s
	}
	s = s[:maxEntryLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
