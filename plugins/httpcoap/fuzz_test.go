package httpcoap

import (
	"bytes"
	"context"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// FuzzServeHTTP sends arbitrary HTTP requests (method, request target,
// the header fields the handler maps, body) through the HC proxy, whose
// chain answers with arbitrary CoAP bytes. Properties: no panic; the
// status is a real HTTP status; every CoAP request handed to the chain
// encodes and decodes back to itself, with a Proxy-Uri of at most 1034
// bytes (RFC 7252 §5.10); and an OSCORE request's body reaches the chain
// byte for byte (RFC 8613 §11.2: the proxy never alters the ciphertext).
func FuzzServeHTTP(f *testing.F) {
	resp := func(m *coap.Message) []byte {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	content := resp(&coap.Message{Type: coap.Acknowledgement, Code: coap.Content, Payload: []byte("21.5"),
		Options: coap.Options(nil).SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 30).Insert(coap.ETag, []byte{1, 2})})
	oscoreResp := resp(&coap.Message{Type: coap.Acknowledgement, Code: coap.Changed, Payload: []byte{0xdb, 0xaa, 0xd1},
		Options: coap.Options(nil).Insert(coap.OSCORE, nil)})
	created := resp(&coap.Message{Type: coap.Acknowledgement, Code: coap.Created,
		Options: coap.Options(nil).Insert(coap.LocationPath, []byte("ps")).Insert(coap.LocationPath, []byte("x"))})
	f.Add("GET", "/hc/coap://127.0.0.1:5683/sensors/temp", "", "text/plain", "", "", []byte(nil), content)
	f.Add("GET", "/hc/coap%3A%2F%2F%5Bfd00%3A%3A1%5D%2Fs", "application/json", "", "", `"0102"`, []byte(nil), content)
	f.Add("POST", "/hc/coap://[fd00::1]/", "", "application/oscore", "CRQ", "", []byte{0x61, 0x2f, 0x10}, oscoreResp)
	f.Add("PUT", "coap://example.com/ps/data/x?a=b", "", "application/cbor", "", "", []byte{0xa1, 0x00, 0x61, 0x61}, created)
	f.Add("FETCH", "/hc/coaps://h/p", "*/*", "application/octet-stream;q=1", "", "W/\"x\", \"01\"", []byte("x"), []byte{0x60, 0x84})
	f.Fuzz(func(t *testing.T, method, target, accept, contentType, oscore, ifNoneMatch string, body, coapResp []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) {
			return
		}
		var seen []*coap.Message
		do := func(_ context.Context, req *coap.Message, _ bool) (*coap.Message, error) {
			seen = append(seen, req.Clone())
			var m coap.Message
			if err := m.Decode(coapResp); err != nil {
				return &coap.Message{Code: coap.Content}, nil
			}
			return &m, nil
		}
		h, err := NewHandler(Config{MaxBody: 1024, AllowCoAPPayload: len(body)%2 == 0}, do)
		if err != nil {
			t.Fatal(err)
		}
		r := &nethttp.Request{Method: method, URL: u, RequestURI: target, Header: nethttp.Header{},
			Body: nethttpBody(body), Host: "gw", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		for k, v := range map[string]string{"Accept": accept, "Content-Type": contentType, HeaderOSCORE: oscore, "If-None-Match": ifNoneMatch} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code < 100 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		for _, req := range seen {
			b, err := req.Marshal()
			if err != nil {
				t.Fatalf("request to the chain does not encode: %v (%v)", err, req)
			}
			var back coap.Message
			if err := back.Decode(b); err != nil {
				t.Fatalf("request to the chain does not decode: %v", err)
			}
			if v, ok := req.Options.Get(coap.ProxyURI); ok && len(v) > maxProxyURI {
				t.Fatalf("Proxy-Uri of %d bytes", len(v))
			}
			if oscore != "" && req.Options.Has(coap.OSCORE) && !bytes.Equal(req.Payload, body) {
				t.Fatalf("OSCORE body changed: % x -> % x", body, req.Payload)
			}
		}
	})
}

// validMethod keeps to the tokens net/http itself accepts as a method.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`()<>@,;:\"/[]?={}`), c) >= 0 {
			return false
		}
	}
	return true
}

type body struct{ *bytes.Reader }

func (body) Close() error { return nil }

func nethttpBody(b []byte) body { return body{bytes.NewReader(b)} }
