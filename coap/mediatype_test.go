package coap

import "testing"

func TestEveryContentFormatMapsBackToItself(t *testing.T) {
	for _, f := range contentFormats {
		media, enc := MediaType(f.id)
		got, ok := ContentFormatOf(media, enc, 0)
		if !ok || got != f.id {
			t.Errorf("%d → %q %q → %d %v", f.id, media, enc, got, ok)
		}
	}
}

func TestUnknownContentFormatIsCoAPPayload(t *testing.T) {
	media, enc := MediaType(65000)
	if media != "application/coap-payload;cf=65000" || enc != "" {
		t.Fatalf("MediaType(65000) = %q %q", media, enc)
	}
	if cf, ok := ContentFormatOf(media, enc, AllowPayloadType); !ok || cf != 65000 {
		t.Fatalf("back: %d %v", cf, ok)
	}
}

func TestContentFormatOf(t *testing.T) {
	const (
		exact = MediaMatch(0)
		loose = Generalize
		allow = AllowPayloadType
	)
	tests := []struct {
		media, enc string
		m          MediaMatch
		cf         uint16
		ok         bool
	}{
		{"text/plain", "", exact, 0, true},
		{"text/plain; charset=UTF-8", "identity", exact, 0, true},
		{"text/plain; charset=iso-8859-1", "", exact, 0, false},
		{"application/json", "deflate", exact, 11050, true},
		{"application/json", "gzip", exact, 0, false},
		{"application/cose; cose-type=cose-encrypt0", "", exact, 16, true},
		{`application/cose; cose-type="cose-sign"`, "", exact, 98, true},
		{"application/oscore", "", exact, 10001, true},
		{"application/vnd.x+json", "", exact, 0, false},
		{"application/vnd.x+json", "", loose, 50, true},
		{"application/vnd.x+cbor", "", loose, 60, true},
		{"text/xml", "", loose, 41, true},
		{"text/html", "", loose, 0, true},
		{"image/png", "", loose, 42, true},
		{"application/coap-payload; cf=65000", "", exact, 0, false},
		{"application/coap-payload; cf=65000", "", loose, 0, false},
		{"application/coap-payload; cf=65000", "", allow, 65000, true},
		{"application/coap-payload; cf=65000", "gzip", allow, 0, false},
		{"application/coap-payload; cf=x", "", allow, 0, false},
		{"not a media type", "", loose | allow, 0, false},
	}
	for _, tc := range tests {
		cf, ok := ContentFormatOf(tc.media, tc.enc, tc.m)
		if cf != tc.cf || ok != tc.ok {
			t.Errorf("ContentFormatOf(%q, %q, %d) = %d %v, want %d %v", tc.media, tc.enc, tc.m, cf, ok, tc.cf, tc.ok)
		}
	}
}
