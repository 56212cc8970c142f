package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewLogHandler picks the daemon's log handler for w, its stderr: the
// journal's native protocol when w is the stream systemd connected to the
// journal (JOURNAL_STREAM names w's device and inode) and the journal
// socket answers, so every attribute becomes a field that
// `journalctl -o verbose` and `journalctl FIELD=value` see; a text handler
// on w otherwise (a shell, a test buffer, a unit with StandardError=file).
// ident is the SYSLOG_IDENTIFIER journal entries carry.
//
// Either way a record carries each attribute key once (UniqueAttrs).
func NewLogHandler(w io.Writer, ident string, opts *slog.HandlerOptions) slog.Handler {
	if isJournalStream(w, os.Getenv("JOURNAL_STREAM")) && journal.Enabled() {
		return UniqueAttrs(NewJournalHandler(ident, opts))
	}
	return UniqueAttrs(slog.NewTextHandler(w, opts))
}

// UniqueAttrs wraps h so that each record carries an attribute key once
// per group: a logger handed down with component=radio to a driver that
// adds component=spinel logs component=spinel, not both. The later value
// wins, being the more specific, in the place of the first.
func UniqueAttrs(h slog.Handler) slog.Handler { return &uniqueAttrs{h: h} }

// uniqueAttrs holds back the attributes added since the last group, so
// that a later one with the same key can replace them; those of enclosing
// groups are passed to h, since keys in different groups do not collide.
type uniqueAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (u *uniqueAttrs) Enabled(ctx context.Context, l slog.Level) bool { return u.h.Enabled(ctx, l) }

func (u *uniqueAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &uniqueAttrs{h: u.h, attrs: mergeAttrs(u.attrs, as)}
}

func (u *uniqueAttrs) WithGroup(name string) slog.Handler {
	if name == "" {
		return u
	}
	h := u.h
	if len(u.attrs) > 0 {
		h = h.WithAttrs(u.attrs)
	}
	return &uniqueAttrs{h: h.WithGroup(name)}
}

func (u *uniqueAttrs) Handle(ctx context.Context, r slog.Record) error {
	rec := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		rec = append(rec, a)
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(mergeAttrs(u.attrs, rec)...)
	return u.h.Handle(ctx, out)
}

// mergeAttrs is base followed by add, an attribute of add replacing the
// one of the same key. Inline groups (empty keys) are kept as they come.
func mergeAttrs(base, add []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(base), len(base)+len(add))
	copy(out, base)
	for _, a := range add {
		i := -1
		if a.Key != "" {
			i = slices.IndexFunc(out, func(b slog.Attr) bool { return b.Key == a.Key })
		}
		if i >= 0 {
			out[i] = a
		} else {
			out = append(out, a)
		}
	}
	return out
}

// isJournalStream reports whether w is a file whose device and inode are
// stream, the "dev:ino" of JOURNAL_STREAM.
func isJournalStream(w io.Writer, stream string) bool {
	f, ok := w.(*os.File)
	if !ok || stream == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(stream, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// JournalHandler is a slog.Handler that sends each record as one journal
// entry: MESSAGE is the message followed by its attributes as key=value
// (what `journalctl -u gatewayd` shows), PRIORITY follows the level, and
// each attribute is also a field of its own, its key upper-cased with
// groups joined by "_" ("peer" → PEER, group "radio" key "port" →
// RADIO_PORT).
type JournalHandler struct {
	opts   slog.HandlerOptions
	ident  string
	prefix string      // group prefix for attributes added from here on
	attrs  []journalKV // from WithAttrs, already flattened
	send   func(msg string, p journal.Priority, vars map[string]string) error
}

type journalKV struct{ field, text, key string }

var _ slog.Handler = (*JournalHandler)(nil)

// NewJournalHandler returns a handler that writes to the local journal.
func NewJournalHandler(ident string, opts *slog.HandlerOptions) *JournalHandler {
	h := &JournalHandler{ident: ident, send: journal.Send}
	if opts != nil {
		h.opts = *opts
	}
	return h
}

// Enabled reports whether the level is logged.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.opts.Level != nil {
		min = h.opts.Level.Level()
	}
	return l >= min
}

// WithAttrs returns a handler that adds attrs to every record.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]journalKV(nil), h.attrs...)
	for _, a := range attrs {
		c.attrs = h.flatten(c.attrs, h.prefix, a)
	}
	return &c
}

// WithGroup returns a handler that puts later attributes in group name.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

// Handle sends the record.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	kvs := append([]journalKV(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		kvs = h.flatten(kvs, h.prefix, a)
		return true
	})
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := make(map[string]string, len(kvs)+4)
	for _, kv := range kvs {
		fmt.Fprintf(&msg, " %s=%s", kv.key, quoteIfNeeded(kv.text))
		vars[kv.field] = kv.text
	}
	if h.ident != "" {
		vars["SYSLOG_IDENTIFIER"] = h.ident
	}
	if h.opts.AddSource && r.PC != 0 {
		f := r.Source()
		vars["CODE_FILE"] = f.File
		vars["CODE_LINE"] = strconv.Itoa(f.Line)
		vars["CODE_FUNC"] = f.Function
	}
	if err := h.send(msg.String(), priority(r.Level), vars); err != nil {
		return fmt.Errorf("service: journal: %w", err)
	}
	return nil
}

// flatten appends a's leaves, resolved, with their keys under prefix.
func (h *JournalHandler) flatten(kvs []journalKV, prefix string, a slog.Attr) []journalKV {
	a.Value = a.Value.Resolve()
	if h.opts.ReplaceAttr != nil && a.Value.Kind() != slog.KindGroup {
		var groups []string
		if prefix != "" {
			groups = strings.Split(strings.TrimSuffix(prefix, "."), ".")
		}
		a = h.opts.ReplaceAttr(groups, a)
		a.Value = a.Value.Resolve()
	}
	if a.Equal(slog.Attr{}) {
		return kvs
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			kvs = h.flatten(kvs, p, g)
		}
		return kvs
	}
	key := prefix + a.Key
	return append(kvs, journalKV{field: fieldName(key), text: a.Value.String(), key: key})
}

// reserved are journal fields a record sets itself or that journald
// trusts; an attribute that maps onto one is prefixed instead.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true,
	"SYSLOG_FACILITY": true, "SYSLOG_PID": true, "CODE_FILE": true, "CODE_LINE": true,
	"CODE_FUNC": true, "ERRNO": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true,
}

// fieldName maps an attribute key to a journal field name: upper case
// letters, digits and "_", not starting with "_" or a digit.
func fieldName(key string) string {
	b := make([]byte, 0, len(key)+5)
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, c-'a'+'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	f := string(b)
	if f == "" || f[0] == '_' || (f[0] >= '0' && f[0] <= '9') || reserved[f] {
		f = "ATTR_" + strings.TrimLeft(f, "_")
	}
	return f
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}

// priority maps slog levels onto syslog priorities.
func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}
