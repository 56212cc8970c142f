package httpcoap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func TestClientMapsHTTPOriginToCoAP(t *testing.T) {
	var (
		mu       sync.Mutex
		seen     *http.Request // guarded by mu: the last request the origin got
		seenBody []byte        // guarded by mu
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen, seenBody = r.Clone(context.Background()), body
		mu.Unlock()
		switch r.URL.Path {
		case "/temp":
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(304)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "public, max-age=10")
			w.Header().Set("ETag", `"v1"`)
			_, _ = w.Write([]byte(`{"t":1}`))
		case "/signed":
			w.Header().Set("Content-Type", `application/cose; cose-type="cose-sign1"`)
			_, _ = w.Write(cose)
		case "/items":
			w.WriteHeader(201)
		case "/oscore":
			w.Header().Set("OSCORE", "AA")
			w.Header().Set("Content-Type", "application/oscore")
			_, _ = w.Write(unhex(t, c7Ciphertext))
		case "/big":
			_, _ = w.Write(bytes.Repeat([]byte{1}, 100))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/busy":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
			_, _ = w.Write([]byte("later"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Timeout: 500 * time.Millisecond, MaxResponse: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()

	get := &coap.Message{Code: coap.GET}
	tests := []struct {
		name    string
		path    string
		req     *coap.Message
		code    coap.Code
		errCode coap.Code
		check   func(t *testing.T, resp *coap.Message)
	}{
		{name: "GET maps media type, freshness and ETag", path: "/temp", req: get, code: coap.Content, check: func(t *testing.T, resp *coap.Message) {
			cf, _ := resp.Options.Uint(coap.ContentFormat)
			ma, _ := resp.Options.Uint(coap.MaxAge)
			tag, _ := resp.Options.Get(coap.ETag)
			if cf != 50 || ma != 10 || string(tag) != "v1" || string(resp.Payload) != `{"t":1}` {
				t.Errorf("cf %d max-age %d etag %q payload %q", cf, ma, tag, resp.Payload)
			}
		}},
		{name: "ETag validation is 2.03", path: "/temp", req: &coap.Message{Code: coap.GET, Options: coap.Options{{ID: coap.ETag, Value: []byte("v1")}}}, code: coap.Valid},
		{name: "COSE stays COSE", path: "/signed", req: get, code: coap.Content, check: func(t *testing.T, resp *coap.Message) {
			cf, _ := resp.Options.Uint(coap.ContentFormat)
			if cf != 18 || !bytes.Equal(resp.Payload, cose) {
				t.Errorf("cf %d payload %x", cf, resp.Payload)
			}
		}},
		{name: "POST creating is 2.01", path: "/items", req: &coap.Message{Code: coap.POST, Payload: []byte("x")}, code: coap.Created},
		{name: "DELETE of a missing resource is 2.02", path: "/gone", req: &coap.Message{Code: coap.DELETE}, code: coap.Deleted},
		{name: "GET of a missing resource is 4.04", path: "/gone", req: get, code: coap.NotFound},
		{name: "503 keeps Retry-After as Max-Age", path: "/busy", req: get, code: coap.ServiceUnavailable, check: func(t *testing.T, resp *coap.Message) {
			if ma, _ := resp.Options.Uint(coap.MaxAge); ma != 7 {
				t.Errorf("Max-Age %d", ma)
			}
		}},
		{name: "a body over MaxResponse is 5.02", path: "/big", req: get, errCode: coap.BadGateway},
		{name: "a slow origin is 5.04", path: "/slow", req: get, errCode: coap.GatewayTimeout},
		{name: "FETCH has no HTTP method", path: "/temp", req: &coap.Message{Code: coap.FETCH}, errCode: coap.MethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.RoundTrip(t.Context(), srv.URL+tc.path, tc.req)
			if tc.errCode != 0 {
				var ce *coap.Error
				if !errors.As(err, &ce) || ce.Code != tc.errCode {
					t.Fatalf("err %v, want a coap.Error %v", err, tc.errCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != tc.code {
				t.Fatalf("code %v, want %v", resp.Code, tc.code)
			}
			if tc.check != nil {
				tc.check(t, resp)
			}
		})
	}

	t.Run("OSCORE crosses byte for byte (RFC 8613 C.4, C.7)", func(t *testing.T) {
		var c4 coap.Message
		if err := c4.Decode(unhex(t, c4Protected)); err != nil {
			t.Fatal(err)
		}
		resp, err := c.RoundTrip(t.Context(), srv.URL+"/oscore", &c4)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seen, seenBody := seen, seenBody
		mu.Unlock()
		if seen.Method != "POST" || seen.Header.Get("OSCORE") != "CRQ" || seen.Header.Get("Content-Type") != "application/oscore" ||
			!bytes.Equal(seenBody, unhex(t, c4Ciphertext)) {
			t.Errorf("HTTP request %s OSCORE=%q type=%q body %x", seen.Method, seen.Header.Get("OSCORE"), seen.Header.Get("Content-Type"), seenBody)
		}
		resp.Type, resp.MID, resp.Token = coap.Acknowledgement, 0x5d1f, []byte{0, 0, 0x39, 0x74}
		b, _ := resp.Marshal()
		if !bytes.Equal(b, unhex(t, c7Protected)) {
			t.Errorf("CoAP response %x, want %s", b, c7Protected)
		}
	})

	t.Run("hosts outside AllowHosts are 5.05", func(t *testing.T) {
		c2, err := NewClient(ClientConfig{AllowHosts: []string{"example.org"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c2.RoundTrip(t.Context(), srv.URL+"/temp", get)
		var ce *coap.Error
		if !errors.As(err, &ce) || ce.Code != coap.ProxyingNotSupported {
			t.Errorf("err %v", err)
		}
	})
}
