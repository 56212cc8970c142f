package httpcoap

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// cose is a COSE_Sign1-like blob with the bytes a careless text path
// would break: NUL, 0xff, CR LF.
var cose = []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x00, 0xff, 0x0d, 0x0a, 0x58, 0x40, 0x00, 0xff, 0xfe}

func TestCurlThroughProxyToCoAPOrigin(t *testing.T) {
	answer := func(ctx context.Context, req *coap.Message) *coap.Message {
		path := strings.Join(optStrings(req, coap.URIPath), "/")
		switch path {
		case "sensors/temp":
			if _, ok := req.Options.Get(coap.ETag); ok {
				return &coap.Message{Code: coap.Valid, Options: coap.Options{{ID: coap.ETag, Value: []byte{1, 2}}, {ID: coap.MaxAge, Value: []byte{30}}}}
			}
			m := &coap.Message{Code: coap.Content, Payload: []byte(`{"t":21.5}`)}
			m.Options = m.Options.Insert(coap.ETag, []byte{1, 2}).SetUint(coap.ContentFormat, 50).SetUint(coap.MaxAge, 30)
			return m
		case "signed":
			m := &coap.Message{Code: coap.Content, Payload: cose}
			m.Options = m.Options.SetUint(coap.ContentFormat, 18)
			return m
		case "odd":
			m := &coap.Message{Code: coap.Content, Payload: []byte{7}}
			m.Options = m.Options.SetUint(coap.ContentFormat, 65000)
			return m
		case "actuator":
			return &coap.Message{Code: coap.Changed}
		case "items":
			m := &coap.Message{Code: coap.Created}
			m.Options = m.Options.Insert(coap.LocationPath, []byte("items")).Insert(coap.LocationPath, []byte("7"))
			return m
		case "fixed":
			return &coap.Message{Code: coap.MethodNotAllowed}
		case "slow":
			select {
			case <-ctx.Done():
			case <-time.After(3 * time.Second):
			}
			return nil
		}
		return &coap.Message{Code: coap.NotFound, Payload: []byte("no such resource")}
	}
	o, c, h, base := proxy(t, Config{Timeout: 700 * time.Millisecond}, answer)
	payloadFile := writeFile(t, []byte("on"))
	coseFile := writeFile(t, cose)
	big := writeFile(t, bytes.Repeat([]byte{'x'}, DefaultMaxBody+1))

	tests := []struct {
		name      string
		args      []string
		status    int
		headers   map[string]string
		body      []byte
		proxyURI  string
		method    coap.Code
		options   map[coap.OptionID][]string // expected at the origin
		noRequest bool                       // the origin must not be asked
	}{
		{
			name: "GET maps content format, Max-Age and ETag", args: []string{base + "/hc/coap://[fd00::1]/sensors/temp"},
			status: 200, body: []byte(`{"t":21.5}`),
			headers:  map[string]string{"content-type": "application/json", "cache-control": "max-age=30", "etag": `"AQI"`},
			proxyURI: "coap://[fd00::1]/sensors/temp", method: coap.GET,
			options: map[coap.OptionID][]string{coap.URIPath: {"sensors", "temp"}},
		},
		{
			name: "percent-encoded brackets of RFC 8075 5.3.2", args: []string{base + "/hc/coap://%5Bfd00::1%5D:5699/sensors/temp?unit=c"},
			status: 200, proxyURI: "coap://[fd00::1]:5699/sensors/temp?unit=c", method: coap.GET,
			options: map[coap.OptionID][]string{coap.URIQuery: {"unit=c"}},
		},
		{
			name: "conditional GET becomes a validation and 2.03 is 304", args: []string{"-H", `If-None-Match: "AQI"`, base + "/hc/coap://node/sensors/temp"},
			status: 304, headers: map[string]string{"etag": `"AQI"`}, method: coap.GET,
			options: map[coap.OptionID][]string{coap.ETag: {"\x01\x02"}},
		},
		{
			name: "Accept maps to the most preferred known format", args: []string{"-H", "Accept: text/html;q=0.9, application/cbor, */*;q=0.1", base + "/hc/coap://node/sensors/temp"},
			status: 200, method: coap.GET, options: map[coap.OptionID][]string{coap.Accept: {"\x3c"}},
		},
		{
			name: "COSE body crosses byte for byte", args: []string{base + "/hc/coap://node/signed"},
			status: 200, body: cose, headers: map[string]string{"content-type": `application/cose;cose-type="cose-sign1"`},
		},
		{
			name: "unknown content format is application/coap-payload", args: []string{base + "/hc/coap://node/odd"},
			status: 200, headers: map[string]string{"content-type": "application/coap-payload;cf=65000"},
		},
		{
			name:   "PUT with text maps to format 0 and 2.04 without payload to 204",
			args:   []string{"-X", "PUT", "-H", "Content-Type: text/plain; charset=utf-8", "--data-binary", "@" + payloadFile, base + "/hc/coap://node/actuator"},
			status: 204, method: coap.PUT, options: map[coap.OptionID][]string{coap.ContentFormat: {""}},
		},
		{
			name:   "FETCH by name with a CBOR body",
			args:   []string{"-X", "FETCH", "-H", "Content-Type: application/cbor", "--data-binary", "@" + coseFile, base + "/hc/coap://node/sensors/temp"},
			status: 200, method: coap.FETCH, options: map[coap.OptionID][]string{coap.ContentFormat: {"\x3c"}},
		},
		{
			name:   "PATCH is CoAP PATCH",
			args:   []string{"-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "--data-binary", "@" + payloadFile, base + "/hc/coap://node/actuator"},
			status: 204, method: coap.PATCH, options: map[coap.OptionID][]string{coap.ContentFormat: {"\x34"}},
		},
		{
			name: "2.01 Location-Path becomes Location", args: []string{"-X", "POST", base + "/hc/coap://node/items"},
			status: 201, headers: map[string]string{"location": "/hc/coap://node/items/7"}, method: coap.POST,
		},
		{
			name: "DELETE of a missing resource is 404 with the diagnostic", args: []string{"-X", "DELETE", base + "/hc/coap://node/nothing"},
			status: 404, body: []byte("no such resource"), headers: map[string]string{"content-type": "text/plain;charset=utf-8"}, method: coap.DELETE,
		},
		{
			name: "4.05 is 400 and says so", args: []string{base + "/hc/coap://node/fixed"},
			status: 400, body: []byte("CoAP server returned 4.05 Method Not Allowed\n"),
		},
		{
			name: "HEAD has headers only", args: []string{"-I", base + "/hc/coap://node/sensors/temp"},
			status: 200, headers: map[string]string{"content-type": "application/json"}, method: coap.GET,
		},
		{
			name: "no answer in time is 504", args: []string{base + "/hc/coap://node/slow"}, status: 504,
		},
		{
			name: "unmappable media type is 415", args: []string{"-X", "POST", "-H", "Content-Type: application/x-made-up", "--data-binary", "@" + payloadFile, base + "/hc/coap://node/actuator"},
			status: 415, noRequest: true,
		},
		{
			name: "coap-payload is refused unless configured", args: []string{"-X", "POST", "-H", "Content-Type: application/coap-payload;cf=65000", "--data-binary", "@" + payloadFile, base + "/hc/coap://node/actuator"},
			status: 415, noRequest: true,
		},
		{
			name: "OPTIONS is 501", args: []string{"-X", "OPTIONS", base + "/hc/coap://node/sensors/temp"}, status: 501, noRequest: true,
		},
		{
			name: "a target without scheme is 400", args: []string{base + "/hc/node/sensors/temp"}, status: 400, noRequest: true,
		},
		{
			name: "an http target is 400", args: []string{base + "/hc/http://node/x"}, status: 400, noRequest: true,
		},
		{
			name: "outside the prefix is 400", args: []string{base + "/other"}, status: 400, noRequest: true,
		},
		{
			name: "a body over MaxBody is 413", args: []string{"-X", "PUT", "-H", "Content-Type: text/plain", "--data-binary", "@" + big, base + "/hc/coap://node/actuator"},
			status: 413, noRequest: true,
		},
		{
			name: "a malformed OSCORE header field is 400", args: []string{"-X", "POST", "-H", "OSCORE: CR+Q=", "-H", "Content-Type: application/oscore", "--data-binary", "@" + payloadFile, base + "/hc/coap://node/"},
			status: 400, noRequest: true,
		},
		{
			name: "OSCORE with GET is 400", args: []string{"-H", "OSCORE: CRQ", base + "/hc/coap://node/"}, status: 400, noRequest: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := o.count()
			r := curl(t, tc.args...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %q", r.status, tc.status, r.body)
			}
			for k, v := range tc.headers {
				if r.headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, r.headers[k], v)
				}
			}
			if tc.body != nil && !bytes.Equal(r.body, tc.body) {
				t.Errorf("body %x, want %x", r.body, tc.body)
			}
			if tc.noRequest {
				if o.count() != before {
					t.Errorf("origin was asked")
				}
				return
			}
			if o.count() == before && tc.status != 504 {
				t.Fatal("origin was not asked")
			}
			got := o.last()
			if tc.method != 0 && got.Code != tc.method {
				t.Errorf("method %v, want %v", got.Code, tc.method)
			}
			if tc.proxyURI != "" && c.lastProxyURI() != tc.proxyURI {
				t.Errorf("Proxy-Uri %q, want %q", c.lastProxyURI(), tc.proxyURI)
			}
			for id, want := range tc.options {
				if g := optStrings(got, id); !slices.Equal(g, want) {
					t.Errorf("option %v = %q, want %q", id, g, want)
				}
			}
		})
	}
	if s := h.Stats(); s.Requests == 0 || s.Rejected == 0 || s.UpstreamErrors == 0 {
		t.Errorf("stats %+v: every counter should have moved", s)
	}
}

// RFC 8613 Appendix C.4 and C.7: the protected request and response.
const (
	c4Protected  = "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"
	c4Ciphertext = "612f1092f1776f1c1668b3825e"
	c7Protected  = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"
	c7Ciphertext = "dbaad1e9a7e7b2a813d3c31524378303cdafae119106"
)

func TestOSCOREOverHTTPIsByteExact(t *testing.T) {
	var c7 coap.Message
	if err := c7.Decode(unhex(t, c7Protected)); err != nil {
		t.Fatal(err)
	}
	o, _, h, base := proxy(t, Config{}, func(ctx context.Context, req *coap.Message) *coap.Message {
		resp := c7.Clone()
		resp.Token, resp.MID, resp.Type = nil, 0, 0
		return resp
	})
	// OSCORE option 0x0914 in base64url without padding is "CRQ".
	r := curl(t, "-X", "POST", "-H", "Content-Type: application/oscore", "-H", "OSCORE: CRQ",
		"--data-binary", "@"+writeFile(t, unhex(t, c4Ciphertext)), base+"/hc/coap://localhost/")

	// CoAP side: what the origin got, with C.4's token and message ID, is
	// C.4's protected request to the byte.
	got := o.last().Clone()
	got.Type, got.MID, got.Token = coap.Confirmable, 0x5d1f, []byte{0, 0, 0x39, 0x74}
	b, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, unhex(t, c4Protected)) {
		t.Errorf("CoAP request\n got %x\nwant %s", b, c4Protected)
	}

	// HTTP side: 200, OSCORE: AA (the empty option), application/oscore,
	// the ciphertext unchanged.
	if r.status != 200 || r.headers["oscore"] != "AA" || r.headers["content-type"] != "application/oscore" {
		t.Errorf("HTTP response %d %v", r.status, r.headers)
	}
	if !bytes.Equal(r.body, unhex(t, c7Ciphertext)) {
		t.Errorf("HTTP body %x, want %s", r.body, c7Ciphertext)
	}
	// And back: an HTTP-to-CoAP mapping of that response rebuilds C.7.
	opt, err := DecodeOSCORE(r.headers["oscore"])
	if err != nil {
		t.Fatal(err)
	}
	back := &coap.Message{Type: coap.Acknowledgement, Code: coap.Changed, MID: 0x5d1f, Token: []byte{0, 0, 0x39, 0x74}, Payload: r.body}
	back.Options = back.Options.Insert(coap.OSCORE, opt)
	if b, _ := back.Marshal(); !bytes.Equal(b, unhex(t, c7Protected)) {
		t.Errorf("rebuilt response %x, want %s", b, c7Protected)
	}
	if h.Stats().OSCORE != 1 {
		t.Errorf("OSCORE counter %d", h.Stats().OSCORE)
	}
}

func TestDoErrorsMapToGatewayStatuses(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		retryAfter string
	}{
		{"timeout", coap.ErrTimeout, 504, ""},
		{"busy", coap.ErrBusy, 503, ""},
		{"coap error with Max-Age", &coap.Error{Code: coap.ServiceUnavailable, MaxAge: 5}, 503, "5"},
		{"proxying not supported", coap.Errorf(coap.ProxyingNotSupported, "no route"), 502, ""},
		{"hop limit", coap.Errorf(coap.HopLimitReached, ""), 508, ""},
		{"other", context.Canceled, 503, ""},
		{"reset", coap.ErrReset, 502, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHandler(Config{}, func(context.Context, *coap.Message, bool) (*coap.Message, error) { return nil, tc.err })
			if err != nil {
				t.Fatal(err)
			}
			srv := newServer(t, h)
			r := curl(t, srv+"/hc/coap://node/x")
			if r.status != tc.status || r.headers["retry-after"] != tc.retryAfter {
				t.Errorf("status %d retry-after %q, want %d %q", r.status, r.headers["retry-after"], tc.status, tc.retryAfter)
			}
		})
	}
}

// A DoFunc that does not complete block-wise transfers hands the Handler
// block 0 of a larger representation (RFC 7959 §2.4): curl gets 502, not
// 1024 bytes as if they were the whole.
func TestFirstBlockIsNeverPassedOffAsTheWhole(t *testing.T) {
	answer := func(_ context.Context, req *coap.Message) *coap.Message {
		m := &coap.Message{Code: coap.Content, Payload: bytes.Repeat([]byte{'b'}, 1024)}
		m.Options = m.Options.Insert(coap.ETag, []byte{1}).Insert(coap.Block2, []byte{0x0e}).SetUint(coap.Size2, 10240)
		return m
	}
	o, _, h, base := proxy(t, Config{}, answer)
	r := curl(t, base+"/hc/coap://127.0.0.1/big")
	if o.count() != 1 {
		t.Fatalf("origin got %d requests", o.count())
	}
	if r.status != 502 || !strings.Contains(string(r.body), "one block of a block-wise transfer") {
		t.Fatalf("HTTP %d %q, want 502", r.status, r.body)
	}
	if h.Stats().UpstreamErrors != 1 {
		t.Errorf("stats %+v", h.Stats())
	}
}
