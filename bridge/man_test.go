package bridge

import (
	"encoding"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/radio"
)

// configKeys maps each table of gatewayd.toml ("proxy", "radio",
// "radio.reassembly", ...) to its keys, from the toml tags of Config and
// the structs below it.
func configKeys() map[string][]string {
	out := map[string][]string{}
	textual := reflect.TypeFor[encoding.TextUnmarshaler]()
	var walk func(t reflect.Type, table string)
	walk = func(t reflect.Type, table string) {
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			out[table] = append(out[table], name)
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textual) {
				walk(ft, table+"."+name)
			}
		}
	}
	for f := range reflect.TypeFor[Config]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		out[name] = nil
		walk(ft, name)
	}
	// A radio driver's own keys are its [radio.<driver>] table.
	for _, d := range radio.Drivers() {
		if t := radio.OptionsType(d); t != nil {
			out["radio"] = append(out["radio"], d)
			walk(t, "radio."+d)
		}
	}
	return out
}

// manKeys maps each table a roff page documents (a .SH or .SS heading
// "[name]" or "[[name]]") to the keys it lists: the words of the .B or
// .BR line that starts each .TP item.
func manKeys(page string) map[string][]string {
	out := map[string][]string{}
	table := ""
	lines := strings.Split(page, "\n")
	for i, line := range lines {
		if h, ok := strings.CutPrefix(line, ".SH "); ok || strings.HasPrefix(line, ".SS ") {
			if !ok {
				h = strings.TrimPrefix(line, ".SS ")
			}
			h = strings.Trim(h, `"`)
			table = ""
			if strings.HasPrefix(h, "[") {
				table = strings.Trim(h, "[]")
				out[table] = out[table][:0:0]
			}
			continue
		}
		if line != ".TP" || table == "" || i+1 >= len(lines) {
			continue
		}
		item := lines[i+1]
		if !strings.HasPrefix(item, ".B ") && !strings.HasPrefix(item, ".BR ") {
			continue
		}
		for _, w := range strings.Fields(item)[1:] {
			w = strings.Trim(w, `",`)
			if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyz0123456789_") == "" {
				out[table] = append(out[table], w)
			}
		}
	}
	return out
}

// gatewayd.toml(5) documents every table and key of the configuration,
// and no key that is not one: a test compares it with the structs, as
// the README tests do with theirs.
func TestManPageDocumentsEveryConfigKey(t *testing.T) {
	want := configKeys()
	got := manKeys(string(mustRead(t, "../packaging/man/gatewayd.toml.5")))
	if len(want) < 10 {
		t.Fatalf("only %d tables found in Config: %v", len(want), want)
	}
	for table, keys := range want {
		doc, ok := got[table]
		if !ok {
			t.Errorf("gatewayd.toml(5) has no section [%s]", table)
			continue
		}
		for _, k := range keys {
			if !slices.Contains(doc, k) {
				t.Errorf("gatewayd.toml(5) [%s] does not document %s", table, k)
			}
		}
		for _, k := range doc {
			if !slices.Contains(keys, k) {
				t.Errorf("gatewayd.toml(5) [%s] documents %s, which is no key", table, k)
			}
		}
	}
	for table := range got {
		if _, ok := want[table]; !ok {
			t.Errorf("gatewayd.toml(5) has a section [%s] the configuration does not", table)
		}
	}
}

// gatewayd(8) names every metric family.
func TestManPageNamesEveryMetricFamily(t *testing.T) {
	p, _ := fullProxy(t, nil)
	page := strings.ReplaceAll(string(mustRead(t, "../packaging/man/gatewayd.8")), `\(ul`, "_")
	page = strings.ReplaceAll(page, `\-`, "-")
	for _, name := range metricFamilies(t, p) {
		if !strings.Contains(page, name) {
			t.Errorf("gatewayd(8) does not name the metric %s", name)
		}
	}
}
