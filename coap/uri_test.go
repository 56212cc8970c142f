package coap

import (
	"slices"
	"testing"
)

func TestParseURIDecomposesAsRFC7252Section6_4(t *testing.T) {
	tests := []struct {
		in    string
		host  string
		port  uint16
		path  []string
		query []string
	}{
		{"coap://127.0.0.1/", "127.0.0.1", 5683, nil, nil},
		{"coap://[2001:DB8::1]:61616/a/b?x&y=z", "2001:db8::1", 61616, []string{"a", "b"}, []string{"x", "y=z"}},
		{"coaps://Example.COM/%7Esensor/a%2Fb/", "example.com", 5684, []string{"~sensor", "a/b", ""}, nil},
		{"coap://h/temp?q=a%26b+c", "h", 5683, []string{"temp"}, []string{"q=a&b+c"}},
		{"coap://h?", "h", 5683, nil, []string{""}},
		// A valid URI of a scheme without a known default port: the
		// proxy answers 5.05 for it (§5.7.2), not 4.02.
		{"foo://127.0.0.1/x", "127.0.0.1", 0, []string{"x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseURI(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if u.Host != tt.host || u.Port != tt.port || !slices.Equal(u.Path, tt.path) || !slices.Equal(u.Query, tt.query) {
				t.Fatalf("got %+v", u)
			}
		})
	}
	for _, bad := range []string{"/relative", "coap://h/#frag", "coap://", "coap://u@h/", "foo:bar", "coap://h:99999/"} {
		if _, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) accepted", bad)
		}
	}
}

func TestProxyURIAndURIOptionsGiveTheSameURI(t *testing.T) {
	u, _ := ParseURI("coap://[fd00::1]:5683/sensors/temp?unit=c")
	opts := u.SetOptions(nil, 5683)
	back := URIFromOptions(opts, "coap", "fd00::1", 5683)
	if back.String() != u.String() {
		t.Fatalf("%s != %s", back, u)
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"coap://127.0.0.1/", "coap://[::1]:5683/a/b?c=d", "coaps://h/%41%2F?x=%26",
		"http://example.com/x", "coap://h/a//b/?", "coap://[fe80::1%25eth0]/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		// Composing and parsing again gives the same decomposition
		// (§6.4 after §6.5).
		again, err := ParseURI(u.String())
		if err != nil {
			t.Fatalf("ParseURI(%q).String() = %q does not parse: %v", s, u.String(), err)
		}
		if again.Scheme != u.Scheme || again.Host != u.Host || again.Port != u.Port ||
			!slices.Equal(again.Path, u.Path) || !slices.Equal(again.Query, u.Query) {
			t.Fatalf("round trip of %q changed %+v into %+v", s, u, again)
		}
	})
}
