package http

import (
	"bytes"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestEveryContentFormatMapsBackToItself(t *testing.T) {
	for _, f := range formats {
		media, enc := MediaType(f.id)
		got, ok := ContentFormat(media, enc, false, false)
		if !ok || got != f.id {
			t.Errorf("%d → %q %q → %d %v", f.id, media, enc, got, ok)
		}
	}
}

func TestContentFormatLookup(t *testing.T) {
	tests := []struct {
		media, enc   string
		loose, allow bool
		cf           uint16
		ok           bool
	}{
		{"text/plain", "", false, false, 0, true},
		{"text/plain; charset=UTF-8", "identity", false, false, 0, true},
		{"text/plain; charset=iso-8859-1", "", false, false, 0, false},
		{"application/json", "deflate", false, false, 11050, true},
		{"application/json", "gzip", false, false, 0, false},
		{"application/cose; cose-type=cose-encrypt0", "", false, false, 16, true},
		{`application/cose; cose-type="cose-sign"`, "", false, false, 98, true},
		{"application/vnd.x+json", "", false, false, 0, false},
		{"application/vnd.x+json", "", true, false, 50, true},
		{"text/html", "", true, false, 0, true},
		{"image/png", "", true, false, 42, true},
		{"application/coap-payload; cf=65000", "", false, false, 0, false},
		{"application/coap-payload; cf=65000", "", false, true, 65000, true},
		{"application/coap-payload; cf=x", "", false, true, 0, false},
		{"not a media type", "", true, true, 0, false},
	}
	for _, tc := range tests {
		cf, ok := ContentFormat(tc.media, tc.enc, tc.loose, tc.allow)
		if cf != tc.cf || ok != tc.ok {
			t.Errorf("ContentFormat(%q, %q, %v, %v) = %d %v, want %d %v", tc.media, tc.enc, tc.loose, tc.allow, cf, ok, tc.cf, tc.ok)
		}
	}
}

func TestAcceptPicksMostPreferredMappable(t *testing.T) {
	tests := []struct {
		accept string
		cf     uint16
		ok     bool
	}{
		{"application/json", 50, true},
		{"*/*", 0, false},
		{"text/html, application/cbor;q=0.5", 60, true},
		{"application/cbor;q=0.5, application/json;q=0.8", 50, true},
		{"*/*, application/cbor;q=0.2", 0, false},
		{"image/*", 0, false},
	}
	for _, tc := range tests {
		cf, ok := acceptFormat(tc.accept, false)
		if cf != tc.cf || ok != tc.ok {
			t.Errorf("acceptFormat(%q) = %d %v, want %d %v", tc.accept, cf, ok, tc.cf, tc.ok)
		}
	}
}

func TestOSCOREHeaderField(t *testing.T) {
	tests := []struct {
		field string
		opt   []byte
		bad   bool
	}{
		{"AA", []byte{}, false},
		{"CRQ", []byte{0x09, 0x14}, false},
		{"CSU", []byte{0x09, 0x25}, false},
		{"CRQ=", nil, true},
		{"C+Q", nil, true},
		{"C", nil, true},
	}
	for _, tc := range tests {
		opt, err := DecodeOSCORE(tc.field)
		if (err != nil) != tc.bad || !bytes.Equal(opt, tc.opt) {
			t.Errorf("DecodeOSCORE(%q) = %x, %v", tc.field, opt, err)
		}
		if !tc.bad && EncodeOSCORE(opt) != tc.field {
			t.Errorf("EncodeOSCORE(%x) = %q, want %q", opt, EncodeOSCORE(opt), tc.field)
		}
	}
}

func TestStatusTableOfRFC8075(t *testing.T) {
	tests := []struct {
		code                 coap.Code
		payload, conditional bool
		status               int
	}{
		{coap.Created, false, false, 201},
		{coap.Deleted, true, false, 200},
		{coap.Deleted, false, false, 204},
		{coap.Valid, false, true, 304},
		{coap.Changed, false, false, 204},
		{coap.Content, true, false, 200},
		{coap.Unauthorized, false, false, 403},
		{coap.BadOption, false, false, 500},
		{coap.MethodNotAllowed, false, false, 400},
		{coap.NotAcceptable, false, false, 406},
		{coap.PreconditionFailed, false, false, 412},
		{coap.RequestEntityTooLarge, false, false, 413},
		{coap.UnsupportedContentFormat, false, false, 415},
		{coap.NotImplemented, false, false, 501},
		{coap.BadGateway, false, false, 502},
		{coap.ServiceUnavailable, false, false, 503},
		{coap.GatewayTimeout, false, false, 504},
		{coap.ProxyingNotSupported, false, false, 502},
		{coap.NewCode(4, 30), false, false, 400},
		{coap.NewCode(5, 30), false, false, 500},
	}
	for _, tc := range tests {
		if s := statusOf(tc.code, tc.payload, tc.conditional, false); s != tc.status {
			t.Errorf("%v → %d, want %d", tc.code, s, tc.status)
		}
	}
}
