package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

type entry struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func capture(opts *slog.HandlerOptions) (*JournalHandler, *[]entry) {
	var got []entry
	h := NewJournalHandler("gatewayd", opts)
	h.send = func(msg string, p journal.Priority, vars map[string]string) error {
		got = append(got, entry{msg, p, vars})
		return nil
	}
	return h, &got
}

func TestJournalHandlerSendsAttributesAsFields(t *testing.T) {
	h, got := capture(&slog.HandlerOptions{Level: slog.LevelDebug})
	log := slog.New(h).With("component", "radio").WithGroup("spinel")
	log.Warn("frame dropped", "port", "/dev/ttyACM0", slog.Group("frame", "len", 131), "message", "bad fcs", "9lives", true)
	log.Debug("rx")
	slog.New(h).Error("stop", "err", errors.New("did not stop"))

	if len(*got) != 3 {
		t.Fatalf("%d entries, want 3", len(*got))
	}
	e := (*got)[0]
	if e.pri != journal.PriWarning {
		t.Errorf("priority %d, want warning", e.pri)
	}
	wantMsg := `frame dropped component=radio spinel.port=/dev/ttyACM0 spinel.frame.len=131 spinel.message="bad fcs" spinel.9lives=true`
	if e.msg != wantMsg {
		t.Errorf("MESSAGE\n got %s\nwant %s", e.msg, wantMsg)
	}
	for k, v := range map[string]string{
		"SYSLOG_IDENTIFIER": "gatewayd",
		"COMPONENT":         "radio",
		"SPINEL_PORT":       "/dev/ttyACM0",
		"SPINEL_FRAME_LEN":  "131",
		"SPINEL_MESSAGE":    "bad fcs",
		"SPINEL_9LIVES":     "true",
	} {
		if e.vars[k] != v {
			t.Errorf("%s=%q, want %q (fields %v)", k, e.vars[k], v, e.vars)
		}
	}
	if (*got)[1].pri != journal.PriDebug || (*got)[2].pri != journal.PriErr || (*got)[2].vars["ERR"] != "did not stop" {
		t.Errorf("debug/error entries: %+v", (*got)[1:])
	}
}

func TestJournalFieldNamesAreValid(t *testing.T) {
	for key, want := range map[string]string{
		"peer":      "PEER",
		"Hop-Limit": "HOP_LIMIT",
		"message":   "ATTR_MESSAGE",
		"PRIORITY":  "ATTR_PRIORITY",
		"_pid":      "ATTR_PID",
		"2nd":       "ATTR_2ND",
		"":          "ATTR_",
		"nödé":      "N__D__",
	} {
		if got := fieldName(key); got != want {
			t.Errorf("fieldName(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestJournalHandlerHonoursLevelAndReplaceAttr(t *testing.T) {
	h, got := capture(&slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == "psk" {
				return slog.Attr{}
			}
			return a
		},
	})
	log := slog.New(h)
	log.Info("quiet")
	log.Warn("loud", "psk", "secret", "id", "node1")
	if len(*got) != 1 {
		t.Fatalf("%d entries, want 1", len(*got))
	}
	if e := (*got)[0]; strings.Contains(e.msg, "secret") || e.vars["PSK"] != "" || e.vars["ID"] != "node1" {
		t.Fatalf("entry %+v", e)
	}
}

func TestJournalSendErrorIsWrapped(t *testing.T) {
	h := NewJournalHandler("gatewayd", nil)
	h.send = func(string, journal.Priority, map[string]string) error { return syscall.ENOENT }
	err := h.Handle(context.Background(), slog.NewRecord(timeZero, slog.LevelInfo, "x", 0))
	if !errors.Is(err, syscall.ENOENT) || !strings.HasPrefix(err.Error(), "service: journal: ") {
		t.Fatalf("err = %v", err)
	}
}

func TestLogHandlerChoosesJournalOnlyForTheJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, c := range []struct {
		name   string
		w      any
		stream string
		want   bool
	}{
		{"matching file", f, match, true},
		{"no JOURNAL_STREAM", f, "", false},
		{"another inode", f, fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"malformed", f, "journal", false},
		{"not a file", &bytes.Buffer{}, match, false},
	} {
		w := c.w.(interface{ Write([]byte) (int, error) })
		if got := isJournalStream(w, c.stream); got != c.want {
			t.Errorf("%s: isJournalStream = %v, want %v", c.name, got, c.want)
		}
	}

	// A buffer (tests, run() with a captured stderr) always gets text,
	// even when the process itself runs under the journal.
	t.Setenv("JOURNAL_STREAM", match)
	var buf bytes.Buffer
	slog.New(NewLogHandler(&buf, "gatewayd", nil)).Info("hello", "k", "v")
	if !strings.Contains(buf.String(), "msg=hello k=v") {
		t.Fatalf("text handler wrote %q", buf.String())
	}
}

var timeZero time.Time

// A logger handed down with component=radio to a driver that adds
// component=spinel logs one component, the driver's; a key repeated in
// the record replaces the logger's; keys in other groups stay apart.
func TestLogHandlerCarriesEachAttributeOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(&buf, "gatewayd", nil))
	radio := log.With("component", "radio").With("radio", "hall", "driver", "spinel")
	radio.With("component", "spinel", "device", "/dev/ttyACM0").Info("rcp up", "radio", "hall", "version", "1.0")
	radio.WithGroup("link").With("component", "mac").Warn("lost", "err", "eof")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log:\n%s", buf.String())
	}
	want := []string{
		`level=INFO msg="rcp up" component=spinel radio=hall driver=spinel device=/dev/ttyACM0 version=1.0`,
		`level=WARN msg=lost component=radio radio=hall driver=spinel link.component=mac link.err=eof`,
	}
	for i, line := range lines {
		if _, rest, _ := strings.Cut(line, " "); rest != want[i] { // past time=
			t.Errorf("line %d:\n got %s\nwant %s", i, rest, want[i])
		}
	}

	// The journal's MESSAGE and fields too.
	h, got := capture(nil)
	slog.New(UniqueAttrs(h)).With("component", "radio").With("component", "spinel").Info("rcp up")
	if e := (*got)[0]; e.msg != "rcp up component=spinel" || e.vars["COMPONENT"] != "spinel" {
		t.Errorf("journal entry %q %v", e.msg, e.vars)
	}
}
