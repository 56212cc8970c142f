package rd

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Real link-format documents: RFC 6690's and RFC 9176's examples (line
// breaks as the RFCs print them), what libcoap's coap-server, the
// simulated nodes and gatewayd's broker serve.
var realDocuments = []string{
	`</sensors/temp>;if="sensor",</sensors/light>;if="sensor"`,
	`</sensors>;ct=40;title="Sensor Index",
</sensors/temp>;rt="temperature-c";if="sensor",
</sensors/light>;rt="light-lux";if="sensor",
<http://www.example.com/sensors/t123>;anchor="/sensors/temp";rel="describedby",
</t>;anchor="/sensors/temp";rel="alternate"`,
	`<coap://[2001:db8:3::123]:61616/res/0>;ct=60,
<coap://[2001:db8:3::123]:61616/res/1>;ct=60`,
	`</rd/1234>;base="coap://[2001:db8:3::127]:61616";ep=node5;
    et="tag:example.com,2020:platform";ct=40;rt=core.rd-ep`,
	`</rd>;rt=core.rd;ct="40 65225",
</rd-lookup/res>;rt=core.rd-lookup-res;ct="40 TBD64 TBD504";obs,
</rd-lookup/ep>;rt=core.rd-lookup-ep;ct="40 TBD64 TBD504"`,
	`</>;title="General Info";ct=0,</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,</async>;ct=0,</example_data>;title="Example Data";ct=0;obs`,
	`</sensors/temp>;rt="temperature-c";ct=0;obs,</actuators/valve>;rt="valve";ct=0,</echo>,</oscore/temp>;rt="temperature-c";ct=0;obs;osc`,
	`</ps>;rt="core.ps core.ps.coll";ct=40,</ps/1bd0d6d>;rt="core.ps.conf";ct=65001,</ps/data/62e4f8d>;rt="core.ps.data";obs`,
	`</temperature/Malmö>;rel=live-environment-data`,
	`</x>;title*=UTF-8'de'n%c3%a4chstes%20Kapitel;sz=1234;hreflang=en;media="screen"`,
	`</q>;title="a \"quoted\" \\ title"`,
	``,
}

func TestParseLinksReadsRealDocuments(t *testing.T) {
	links, err := ParseLinks(realDocuments[1], 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []Link{
		{"/sensors", []Param{{"ct", "40", true}, {"title", "Sensor Index", true}}},
		{"/sensors/temp", []Param{{"rt", "temperature-c", true}, {"if", "sensor", true}}},
		{"/sensors/light", []Param{{"rt", "light-lux", true}, {"if", "sensor", true}}},
		{"http://www.example.com/sensors/t123", []Param{{"anchor", "/sensors/temp", true}, {"rel", "describedby", true}}},
		{"/t", []Param{{"anchor", "/sensors/temp", true}, {"rel", "alternate", true}}},
	}
	if !reflect.DeepEqual(links, want) {
		t.Fatalf("got %+v", links)
	}
	links, err = ParseLinks(realDocuments[10], 10)
	if err != nil || links[0].Params[0].Value != `a "quoted" \ title` {
		t.Fatalf("quoted-pair: %+v %v", links, err)
	}
	links, err = ParseLinks(realDocuments[6], 10)
	if err != nil || len(links) != 4 {
		t.Fatalf("the nodes' document: %+v %v", links, err)
	}
	if _, ok := links[3].Get("osc"); !ok {
		t.Fatal("osc lost")
	}
	for i, doc := range realDocuments {
		if _, err := ParseLinks(doc, 100); err != nil {
			t.Errorf("document %d: %v", i, err)
		}
	}
}

func TestParseLinksRefusesWhatIsNotLinkFormat(t *testing.T) {
	for _, doc := range []string{
		"hello", "</a>,", "</a>;", "</a>;=x", "</a>;x=", `</a>;x="open`, "</a", "<a b>", "</a>,,</b>",
		"</a> </b>", `</a>;x="\`, "</a>;x=\"\x01\"", "\xff", "</a>x", `</a>;x=y"z"`, "</a\"b>",
	} {
		if _, err := ParseLinks(doc, 10); !errors.Is(err, ErrLinkFormat) {
			t.Errorf("%q: %v", doc, err)
		}
	}
	many := strings.Repeat("</a>,", 10) + "</a>"
	if _, err := ParseLinks(many, 10); !errors.Is(err, ErrLinkFormat) {
		t.Errorf("11 links with a bound of 10: %v", err)
	}
	params := "</a>" + strings.Repeat(";p", maxParams+1)
	if _, err := ParseLinks(params, 10); !errors.Is(err, ErrLinkFormat) {
		t.Errorf("%d parameters: %v", maxParams+1, err)
	}
}

// What String writes parses back to the same link, whatever a registrant
// put in a value: quotes and backslashes cannot end it.
func TestLinkStringEscapesValues(t *testing.T) {
	l := Link{Target: "/x", Params: []Param{
		{"ep", `a",</evil>;rt="x`, true}, {"d", `back\slash`, true}, {"obs", "", false},
		{"title", "plain", true}, {"empty", "", true}, {"ct", "0", true},
	}}
	s := l.String()
	if want := `</x>;ep="a\",</evil>;rt=\"x";d="back\\slash";obs;title="plain";empty="";ct=0`; s != want {
		t.Fatalf("got  %s\nwant %s", s, want)
	}
	back, err := ParseLinks(s, 2)
	if err != nil || len(back) != 1 || !reflect.DeepEqual(back[0], l) {
		t.Fatalf("parsed back: %+v %v", back, err)
	}
}

// FuzzParseLinks: no input panics or yields more than the bound, and a
// document that parses writes out (FormatLinks) as one that parses to
// the same links.
func FuzzParseLinks(f *testing.F) {
	for _, d := range realDocuments {
		f.Add(d)
	}
	f.Add(`</a>;x="\"",<b>`)
	f.Fuzz(func(t *testing.T, doc string) {
		links, err := ParseLinks(doc, 16)
		if err != nil {
			if !errors.Is(err, ErrLinkFormat) {
				t.Fatalf("error %v does not wrap ErrLinkFormat", err)
			}
			return
		}
		if len(links) > 16 {
			t.Fatalf("%d links over the bound", len(links))
		}
		out := FormatLinks(links)
		again, err := ParseLinks(out, 16)
		if err != nil {
			t.Fatalf("%q parsed, its rewrite %q does not: %v", doc, out, err)
		}
		if len(links) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(links, again) {
			t.Fatalf("round trip changed the links:\n%q\n%+v\n%+v", doc, links, again)
		}
	})
}

// Limited Link Format (RFC 9176 Appendix C) and resolution against a
// scheme://authority base.
func TestLimitedReferencesAndResolution(t *testing.T) {
	for ref, ok := range map[string]bool{
		"/a": true, "coap://h/x": true, "http://h": true, "urn:x:y": true,
		"a": false, "//h/x": false, "": false, "?q": false, "#f": false, "../a": false, "1a:b": false,
	} {
		if limited(ref) != ok {
			t.Errorf("limited(%q) = %v", ref, !ok)
		}
	}
	for _, tc := range []struct{ base, ref, want string }{
		{"coap://[fd00::1]", "/s/t", "coap://[fd00::1]/s/t"},
		{"coap://h:61616", "/s?q=1", "coap://h:61616/s?q=1"},
		{"coap://h/p/q", "/s", "coap://h/s"},
		{"coap://h", "http://x/y", "http://x/y"},
	} {
		if got := resolve(tc.base, tc.ref); got != tc.want {
			t.Errorf("resolve(%q, %q) = %q, want %q", tc.base, tc.ref, got, tc.want)
		}
	}
}
