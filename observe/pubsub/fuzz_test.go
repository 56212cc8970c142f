package pubsub

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/filestore"
)

// loadStore is a store whose state directory holds the given files.
type loadStore struct {
	memStore
	recs []filestore.Record
}

func (s loadStore) Load() ([]filestore.Record, []error) { return s.recs, nil }

// stateSeeds are state files as the broker writes them: a half-created
// topic, a fully created one with a COSE publication and a creator, one
// created with initialize, and one whose data was deleted.
func stateSeeds(f *testing.F) [][]byte {
	f.Helper()
	cfg := testConfig(f)
	r := openRig(f, cfg)
	r.create(sensor("half"))
	_, dp := r.create(map[int]any{KeyTopicName: "full", KeyResourceType: RTData, KeyTopicContentFormat: 18, KeyMaxSubscribers: 7})
	r.publish(dp, 18, []byte{0xd2, 0x84, 0x40, 0xa0, 0x41, 0x00, 0x40})
	r.create(map[int]any{KeyTopicName: "init", KeyResourceType: "core.ps.data temperature", KeyTopicContentFormat: 0, KeyInitialize: []byte("21.5")})
	_, dp = r.create(sensor("emptied"))
	r.publish(dp, 0, []byte("x"))
	r.req(coap.DELETE, dp, nil)
	r.b.Close()
	files, err := filepath.Glob(filepath.Join(cfg.StateDir, stateFiles.Prefix+"*"+stateFiles.Suffix))
	if err != nil || len(files) != 4 {
		f.Fatalf("state files %v, %v", files, err)
	}
	var seeds [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzRestoreRecord feeds arbitrary state files to a starting broker.
// Properties: no panic; a file is a topic or a counted bad file; a topic
// restored encodes to a record that restores to the same topic; and what
// the broker then lists in /.well-known/core is well-formed link-format
// that names the topic's resource types (RFC 6690 §2).
func FuzzRestoreRecord(f *testing.F) {
	for _, s := range stateSeeds(f) {
		f.Add(s)
	}
	cfg := testConfig(f)
	probe, err := New(cfg, withStore(memStore{}))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := New(cfg, withStore(loadStore{recs: []filestore.Record{{Name: "topic-fuzz.cbor", Data: raw}}}))
		if err != nil {
			t.Fatalf("a state file stopped the broker: %v", err)
		}
		defer b.Close()
		st := b.Stats()
		if st.Topics+int(st.BadStateFiles)+int(st.Expired) != 1 {
			t.Fatalf("one file, stats %+v", st)
		}
		tp, err := probe.topicFromRecord(raw)
		if err != nil {
			return
		}
		again, err := probe.recordLocked(tp, &tp.props, tp.full, tp.hasCF, tp.cf, tp.payload, tp.seq)
		if err != nil {
			t.Fatalf("restored topic does not encode: %v", err)
		}
		tp2, err := probe.topicFromRecord(again)
		if err != nil {
			t.Fatalf("re-encoded record %x does not restore: %v", again, err)
		}
		if tp.id != tp2.id || tp.dataSeg != tp2.dataSeg || tp.creator != tp2.creator || tp.full != tp2.full ||
			tp.hasCF != tp2.hasCF || tp.cf != tp2.cf || tp.seq != tp2.seq || string(tp.payload) != string(tp2.payload) ||
			!reflect.DeepEqual(tp.props, tp2.props) {
			t.Fatalf("round trip changed the topic:\n%+v\n%+v", tp, tp2)
		}
		if st.Topics == 1 {
			checkLinks(t, b, *tp.props.ResourceType)
		}
	})
}

// FuzzCreateTopic posts arbitrary configurations to the collection, as a
// client would (draft §2.4.3). Properties: no panic; a created topic
// restores from its state file; and /.well-known/core stays well-formed
// link-format naming the topic's resource types.
func FuzzCreateTopic(f *testing.F) {
	f.Add(mustHex(f, draftExample))
	f.Add(mustHex(f, "a200656d7976617202"+"6c636f72652e70732e64617461"))
	f.Add(enc(f, map[int]any{KeyTopicName: "a", KeyResourceType: RTData, KeyTopicContentFormat: 60}))
	f.Add(enc(f, map[int]any{KeyTopicName: "b", KeyResourceType: "core.ps.data temperature", KeyTopicData: "/ps/data/b"}))
	cfg := testConfig(f)
	f.Fuzz(func(t *testing.T, conf []byte) {
		st := &recordingStore{}
		r := openRig(t, cfg, withStore(st))
		resp := r.req(coap.POST, "/ps", conf, coap.ContentFormat, testCF)
		if resp.Code != coap.Created {
			if resp.Code.Class() == 2 {
				t.Fatalf("a configuration got %v", resp.Code)
			}
			return
		}
		if len(st.saved) != 1 {
			t.Fatalf("created with %d records stored", len(st.saved))
		}
		tp, err := r.b.topicFromRecord(st.saved[0])
		if err != nil {
			t.Fatalf("an acknowledged topic would not load after a restart: %v", err)
		}
		checkLinks(t, r.b, *tp.props.ResourceType)
	})
}

// recordingStore keeps what the broker saved.
type recordingStore struct {
	memStore
	saved [][]byte
}

func (s *recordingStore) Save(_ string, rec []byte) error {
	s.saved = append(s.saved, rec)
	return nil
}

// checkLinks parses every link the broker lists and finds rt among the
// resource types of one of them.
func checkLinks(t *testing.T, b *Broker, rt string) {
	t.Helper()
	found := false
	for _, l := range b.Links() {
		if strings.ContainsAny(l, ",\n\r") {
			t.Fatalf("link %q would split the link-format document", l)
		}
		attrs, ok := parseLink(l)
		if !ok {
			t.Fatalf("the broker lists %q, which is not a link", l)
		}
		if len(attrs["href"]) != 1 || len(attrs["rt"]) == 0 {
			t.Fatalf("link %q parses to %v", l, attrs)
		}
		for name := range attrs {
			switch name {
			case "href", "rt", "ct", "obs":
			default:
				t.Fatalf("link %q carries attribute %q the broker never sets", l, name)
			}
		}
		if slices.Equal(attrs["rt"], strings.Fields(rt)) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no link with rt %q in %q", rt, b.Links())
	}
}

// FuzzFilterLinks applies arbitrary queries (a client's Uri-Query) to
// arbitrary link-format entries. Properties: no panic; the result keeps
// the entries' order and is a subset; a query that names no attribute or
// an entry that is not a link never matches; and a link built by the
// broker parses back to its attributes.
func FuzzFilterLinks(f *testing.F) {
	f.Add(`</ps>;rt="core.ps core.ps.coll";ct=40`, "rt=core.ps", "/ps/data/x", "core.ps.data")
	f.Add(`</ps/data/1>;rt="core.ps.data";ct=0;obs`, "rt=core.ps*", "/a", "b c")
	f.Add(`<x>;a;b=;c="";d="e f"`, "href=x*", "/p", "t")
	f.Add(`<>;=`, "=", "", "")
	f.Fuzz(func(t *testing.T, entry, query, href, rt string) {
		entries := []string{entry, `</ps>;rt="core.ps core.ps.coll";ct=40`, entry + ";x"}
		out := FilterLinks(entries, []string{query})
		if len(out) > len(entries) {
			t.Fatalf("%d of %d", len(out), len(entries))
		}
		i := 0
		for _, e := range out {
			for i < len(entries) && entries[i] != e {
				i++
			}
			if i == len(entries) {
				t.Fatalf("%q not among the entries, or out of order", e)
			}
			i++
			if _, ok := parseLink(e); !ok {
				t.Fatalf("%q matched but is no link", e)
			}
		}
		if strings.HasPrefix(query, "=") && len(out) > 0 {
			t.Fatalf("query %q with no attribute matched %q", query, out)
		}
		// What the broker writes, it reads back: hrefs are topic paths
		// and resource types are checked when topics are created. Both
		// are bounded (max_name_length, at most maxNameLimit), far below
		// parseLink's 4096 bytes; a 4 KiB href is not the broker's.
		if len(href) > 4*maxNameLimit || len(rt) > maxNameLimit ||
			strings.ContainsAny(href, `<>`) || !validResourceType(rt) || strings.TrimSpace(rt) == "" {
			return
		}
		l := link{href: href, rt: rt, ct: "40", obs: true}
		attrs, ok := parseLink(l.String())
		if !ok || attrs["href"][0] != href || !slices.Equal(attrs["rt"], strings.Fields(rt)) ||
			!slices.Equal(attrs["ct"], []string{"40"}) || len(attrs["obs"]) != 1 {
			t.Fatalf("%q parses to %v, %v", l.String(), attrs, ok)
		}
	})
}

// Found by FuzzCreateTopic (testdata/fuzz/FuzzCreateTopic/0b9acb210663072f):
// a resource-type with a '"' was listed verbatim in /.well-known/core, so
// whoever may create topics (radio nodes, by default) could end the rt
// attribute and add attributes or whole links of their choosing.
func TestResourceTypeCannotInjectLinks(t *testing.T) {
	r := newRig(t, nil)
	for _, rt := range []string{
		`core.ps.data";if="evil`,
		`core.ps.data",</evil>;rt="x`,
		`a,</evil>`,
		`a;b`,
		`a<b>`,
		`a\b`,
		"a\tb",
		"a\nb",
		"températures",
		"  ",
	} {
		resp := r.req(coap.POST, "/ps", enc(t, map[int]any{KeyTopicName: "t", KeyResourceType: rt}), coap.ContentFormat, testCF)
		if resp.Code != coap.BadRequest || !strings.Contains(string(resp.Payload), "resource-type") {
			t.Errorf("resource-type %q: %v %q, want 4.00 naming resource-type", rt, resp.Code, resp.Payload)
		}
	}
	if ls := r.b.Links(); len(ls) != 1 {
		t.Fatalf("links after refused creations: %q", ls)
	}
	// Relation types as RFC 6690 §2 has them, names and URIs, still go.
	for i, rt := range []string{"core.ps.data temperature", "http://example.com/rt/temp?x=1#f", "a-b.c_d~e"} {
		_, _ = r.create(map[int]any{KeyTopicName: fmt.Sprint("ok", i), KeyResourceType: rt})
		checkLinks(t, r.b, rt)
	}

	// A state file written before the check (or by hand) is skipped,
	// never listed.
	cfg := testConfig(t)
	bad, err := encodeRecord(&record{Version: recordVersion, ID: "abcd",
		Config: enc(t, map[int]any{KeyTopicName: "old", KeyResourceType: `x",</evil>;rt="y`, KeyTopicData: "/ps/data/old"})})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, stateFiles.Prefix+"abcd"+stateFiles.Suffix), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := openRig(t, cfg)
	if st := r2.b.Stats(); st.Topics != 0 || st.BadStateFiles != 1 {
		t.Fatalf("stats %+v, want the file skipped", st)
	}
	for _, l := range r2.b.Links() {
		if strings.Contains(l, "evil") {
			t.Fatalf("listed %q", l)
		}
	}
}
