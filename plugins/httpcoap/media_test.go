package httpcoap

import (
	"bytes"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

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
