package oscore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// pair returns a client and a server context over the same master secret.
func pair(t testing.TB, idContext []byte) (client, server *Context) {
	t.Helper()
	p := Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), IDContext: idContext}
	cp, sp := p, p
	cp.SenderID, cp.RecipientID = h("c1"), h("5e")
	sp.SenderID, sp.RecipientID = h("5e"), h("c1")
	var err error
	if client, err = NewContext(Config{Params: cp, SendKIDContext: idContext != nil}); err != nil {
		t.Fatal(err)
	}
	if server, err = NewContext(Config{Params: sp}); err != nil {
		t.Fatal(err)
	}
	return client, server
}

func msg(typ coap.Type, code coap.Code, payload string, opts ...coap.Option) *coap.Message {
	m := &coap.Message{Type: typ, Code: code, MID: 0x1234, Token: []byte{1, 2, 3, 4}}
	for _, o := range opts {
		m.Options = m.Options.Insert(o.ID, o.Value)
	}
	if payload != "" {
		m.Payload = []byte(payload)
	}
	return m
}

func opt(id coap.OptionID, v string) coap.Option { return coap.Option{ID: id, Value: []byte(v)} }

func sameMessage(t *testing.T, got, want *coap.Message) {
	t.Helper()
	g, w := marshal(t, got), marshal(t, want)
	if !bytes.Equal(g, w) {
		t.Errorf("message\n got %x (%v)\nwant %x (%v)", g, got, w, want)
	}
}

func TestRoundTripKeepsEveryField(t *testing.T) {
	client, server := pair(t, nil)
	req := msg(coap.Confirmable, coap.PUT, "21.5 C",
		opt(coap.URIHost, "node7.local"), opt(coap.URIPort, "\x16\x34"), opt(coap.IfMatch, "\x01"),
		opt(coap.URIPath, "sensors"), opt(coap.URIPath, "temp"), opt(coap.ContentFormat, "\x00"),
		opt(coap.URIQuery, "unit=c"), opt(coap.Block1, "\x06"), opt(coap.Size1, "\x06"),
		opt(2048, "unknown-elective"), opt(65001, "unknown-critical"))
	preq, cex, err := client.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	// Only class U options and OSCORE stay visible (§4.1).
	var outer []coap.OptionID
	for _, o := range preq.Options {
		outer = append(outer, o.ID)
	}
	if want := []coap.OptionID{coap.URIHost, coap.URIPort, coap.OSCORE}; fmt.Sprint(outer) != fmt.Sprint(want) {
		t.Errorf("outer options %v, want %v", outer, want)
	}
	if preq.Code != coap.POST || bytes.Contains(preq.Payload, []byte("21.5")) {
		t.Errorf("outer code %v, payload %q: code or payload leaked", preq.Code, preq.Payload)
	}
	got, sex, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, got, req)

	resp := msg(coap.Acknowledgement, coap.Changed, "ok", opt(coap.LocationPath, "x"), opt(coap.MaxAge, "\x3c"), opt(coap.ETag, "\xaa"))
	presp, err := sex.ProtectResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if presp.Code != coap.Changed || len(presp.Options) != 1 {
		t.Errorf("outer response %v with options %v, want 2.04 with OSCORE only", presp.Code, presp.Options)
	}
	gotResp, err := cex.UnprotectResponse(presp)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, gotResp, resp)
}

func TestOuterCopiesOfInnerOptionsAreDiscarded(t *testing.T) {
	client, server := pair(t, nil)
	preq, _, err := client.ProtectRequest(msg(coap.Confirmable, coap.GET, "", opt(coap.URIPath, "a")))
	if err != nil {
		t.Fatal(err)
	}
	// An on-path attacker adds unprotected class E and B options (§8.2
	// step 1): they must not reach the application.
	preq.Options = preq.Options.Insert(coap.URIPath, []byte("admin")).Insert(coap.MaxAge, []byte{9}).Insert(coap.ETag, []byte{1})
	got, _, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, got, msg(coap.Confirmable, coap.GET, "", opt(coap.URIPath, "a")))
}

func TestProxyURIIsDecomposed(t *testing.T) {
	// The example of §4.1.3.3.
	client, server := pair(t, nil)
	req := msg(coap.Confirmable, coap.GET, "", opt(coap.ProxyURI, "coap://example.com/resource?q=1"))
	preq, _, err := client.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := preq.Options.Get(coap.ProxyURI); string(v) != "coap://example.com" {
		t.Errorf("outer Proxy-Uri %q, want coap://example.com", v)
	}
	got, _, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	want := msg(coap.Confirmable, coap.GET, "", opt(coap.URIPath, "resource"), opt(coap.URIQuery, "q=1"), opt(coap.ProxyURI, "coap://example.com"))
	sameMessage(t, got, want)
}

func TestDecomposeURI(t *testing.T) {
	tests := []struct {
		uri, base, paths, queries string
		err                       bool
	}{
		{uri: "coap://example.com/resource?q=1", base: "coap://example.com", paths: "[resource]", queries: "[q=1]"},
		{uri: "coap://Example.COM:5683", base: "coap://example.com", paths: "[]", queries: "[]"},
		{uri: "coaps://h:5683/", base: "coaps://h:5683", paths: "[]", queries: "[]"},
		{uri: "COAP://[2001:db8::1]:61616/a/b/?x&y=%2F", base: "coap://[2001:db8::1]:61616", paths: "[a b ]", queries: "[x y=/]"},
		{uri: "coap://h/%E2%82%ACuro", base: "coap://h", paths: "[€uro]", queries: "[]"},
		{uri: "http://h:080/", base: "http://h", paths: "[]", queries: "[]"},
		{uri: "/relative", err: true},
		{uri: "coap://h/#frag", err: true},
		{uri: "coap://user@h/", err: true},
		{uri: "coap://[::1/", err: true},
		{uri: "coap:///path", err: true},
		{uri: "coap://h:99999/", err: true},
		{uri: "coap://h/%zz", err: true},
		{uri: "coap://h/%4", err: true},
		{uri: "1coap://h/", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			base, paths, queries, err := decomposeURI(tt.uri)
			if tt.err {
				if !errors.Is(err, ErrMessage) {
					t.Errorf("err = %v, want ErrMessage", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if base != tt.base || fmt.Sprint(paths) != tt.paths || fmt.Sprint(queries) != tt.queries {
				t.Errorf("got %q %q %q, want %q %s %s", base, paths, queries, tt.base, tt.paths, tt.queries)
			}
		})
	}
}

func TestProtectRejects(t *testing.T) {
	client, _ := pair(t, nil)
	tests := []struct {
		name string
		m    *coap.Message
		want error
	}{
		{"response code", msg(coap.Confirmable, coap.Content, "x"), ErrMessage},
		{"empty code", msg(coap.Confirmable, coap.Empty, ""), ErrMessage},
		{"already protected", msg(coap.Confirmable, coap.GET, "", opt(coap.OSCORE, "")), ErrNested},
		{"Proxy-Uri with Uri-Path", msg(coap.Confirmable, coap.GET, "", opt(coap.ProxyURI, "coap://h/"), opt(coap.URIPath, "x")), ErrMessage},
		{"bad Proxy-Uri", msg(coap.Confirmable, coap.GET, "", opt(coap.ProxyURI, "nope")), ErrMessage},
		{"plaintext over 65535 bytes", msg(coap.Confirmable, coap.POST, strings.Repeat("x", 1<<16)), ErrMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := client.Seq()
			if _, _, err := client.ProtectRequest(tt.m); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if client.Seq() != seq {
				t.Error("a rejected message used a sequence number")
			}
		})
	}
}

func TestUnprotectRequestErrors(t *testing.T) {
	client, server := pair(t, nil)
	good := func() *coap.Message {
		m, _, err := client.ProtectRequest(msg(coap.Confirmable, coap.GET, "", opt(coap.URIPath, "a")))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	withOption := func(v string) *coap.Message {
		m := good()
		m.Options = m.Options.Set(coap.OSCORE, h(v))
		return m
	}
	tests := []struct {
		name string
		m    *coap.Message
		want error
	}{
		{"no OSCORE option", msg(coap.Confirmable, coap.GET, ""), ErrNotOSCORE},
		{"no payload", func() *coap.Message { m := good(); m.Payload = nil; return m }(), ErrDecode},
		{"payload shorter than a tag", func() *coap.Message { m := good(); m.Payload = m.Payload[:8]; return m }(), ErrDecode},
		{"no Partial IV", withOption("08c1"), ErrDecode},
		{"no kid", withOption("0105"), ErrDecode},
		{"reserved flag", withOption("4905c1"), ErrDecode},
		{"repeated OSCORE option", func() *coap.Message { m := good(); m.Options = m.Options.Insert(coap.OSCORE, nil); return m }(), ErrDecode},
		{"unknown kid", withOption("0905c2"), ErrUnknownKID},
		{"kid context the server lacks", withOption("190501aac1"), ErrUnknownKID},
		{"different Partial IV", withOption("0977c1"), ErrDecrypt},
		{"flipped ciphertext", func() *coap.Message { m := good(); m.Payload[0] ^= 1; return m }(), ErrDecrypt},
		{"flipped tag", func() *coap.Message { m := good(); m.Payload[len(m.Payload)-1] ^= 0x80; return m }(), ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, err := server.UnprotectRequest(tt.m); !errors.Is(err, tt.want) || got != nil {
				t.Errorf("got %v, err = %v, want %v", got, err, tt.want)
			}
		})
	}
}

func TestFailedVerificationDoesNotMoveReplayWindow(t *testing.T) {
	client, server := pair(t, nil)
	preq, _, err := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	if err != nil {
		t.Fatal(err)
	}
	forged := preq.Clone()
	forged.Payload[2] ^= 0xff
	if _, _, err := server.UnprotectRequest(forged); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged: err = %v", err)
	}
	if _, _, err := server.UnprotectRequest(preq); err != nil {
		t.Fatalf("genuine request after a forgery with its Partial IV: %v", err)
	}
}

func TestReplayWindowAcceptsReorderedRequests(t *testing.T) {
	client, server := pair(t, nil)
	var reqs []*coap.Message
	for range 5 {
		m, _, err := client.ProtectRequest(msg(coap.NonConfirmable, coap.GET, ""))
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, m)
	}
	for _, i := range []int{4, 1, 0, 3, 2} {
		if _, _, err := server.UnprotectRequest(reqs[i]); err != nil {
			t.Errorf("request %d out of order: %v", i, err)
		}
	}
	for i := range reqs {
		if _, _, err := server.UnprotectRequest(reqs[i]); !errors.Is(err, ErrReplay) {
			t.Errorf("replayed request %d: err = %v, want ErrReplay", i, err)
		}
	}
}

func TestResponseIsBoundToItsRequest(t *testing.T) {
	client, server := pair(t, nil)
	preq1, cex1, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	preq2, cex2, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	_, sex1, err := server.UnprotectRequest(preq1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := server.UnprotectRequest(preq2); err != nil {
		t.Fatal(err)
	}
	presp, err := sex1.ProtectResponseWithPIV(msg(coap.Acknowledgement, coap.Content, "for request 1"))
	if err != nil {
		t.Fatal(err)
	}
	// §7.1: a response to request 1 does not verify as a response to 2.
	if _, err := cex2.UnprotectResponse(presp); !errors.Is(err, ErrDecrypt) {
		t.Errorf("response to another request: err = %v, want ErrDecrypt", err)
	}
	if _, err := cex1.UnprotectResponse(presp); err != nil {
		t.Errorf("response to its own request: %v", err)
	}
}

func TestRequestNonceIsNeverUsedForTwoResponses(t *testing.T) {
	client, server := pair(t, nil)
	preq, _, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	_, sex, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	var pivs []string
	for range 3 {
		r, err := sex.ProtectResponse(msg(coap.Acknowledgement, coap.Content, "x"))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := r.Options.Get(coap.OSCORE)
		pivs = append(pivs, fmt.Sprintf("%x", v))
	}
	if pivs[0] != "" || pivs[1] == "" || pivs[1] == pivs[2] {
		t.Errorf("OSCORE options of three responses %q: want the first empty, then fresh Partial IVs", pivs)
	}
}

func TestObserve(t *testing.T) {
	client, server := pair(t, nil)
	reg := msg(coap.Confirmable, coap.GET, "", opt(coap.Observe, ""), opt(coap.URIPath, "temp"))
	preq, cex, err := client.ProtectRequest(reg)
	if err != nil {
		t.Fatal(err)
	}
	// §4.1.3.5: FETCH outside, Observe both outside and inside.
	if preq.Code != coap.FETCH || !preq.Options.Has(coap.Observe) || !cex.Observe() {
		t.Fatalf("registration: outer code %v, outer Observe %v, exchange observes %v", preq.Code, preq.Options.Has(coap.Observe), cex.Observe())
	}
	got, sex, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, got, reg)
	if !sex.Observe() {
		t.Fatal("server exchange does not observe")
	}

	notify := func(seq uint32, payload string) *coap.Message {
		t.Helper()
		n := msg(coap.NonConfirmable, coap.Content, payload, coap.Option{ID: coap.Observe, Value: coap.EncodeUint(seq)})
		pn, err := sex.ProtectResponse(n)
		if err != nil {
			t.Fatal(err)
		}
		if pn.Code != coap.Content {
			t.Errorf("notification outer code %v, want 2.05", pn.Code)
		}
		if v, _ := pn.Options.Uint(coap.Observe); v != seq {
			t.Errorf("outer Observe %d, want %d", v, seq)
		}
		return pn
	}
	first := notify(7, "20")  // no Partial IV
	second := notify(8, "21") // server Partial IV 0
	third := notify(9, "22")  // server Partial IV 1
	if v, _ := first.Options.Get(coap.OSCORE); len(v) != 0 {
		t.Errorf("first notification OSCORE option %x, want empty", v)
	}

	recv := func(m *coap.Message, want error, payload string, observe uint32) {
		t.Helper()
		got, err := cex.UnprotectResponse(m)
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
		if err != nil {
			return
		}
		if string(got.Payload) != payload {
			t.Errorf("payload %q, want %q", got.Payload, payload)
		}
		if v, ok := got.Options.Uint(coap.Observe); !ok || v != observe {
			t.Errorf("Observe %d (present %v), want %d", v, ok, observe)
		}
	}
	recv(third, nil, "22", 1)
	recv(second, ErrReplay, "", 0) // older than the Notification Number
	recv(third, ErrReplay, "", 0)
	recv(first, nil, "20", 0) // the one without Partial IV, oldest
	recv(first, ErrReplay, "", 0)
	recv(notify(10, "23"), nil, "23", 2)

	final, err := sex.ProtectResponse(msg(coap.NonConfirmable, coap.NotFound, "gone"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cex.UnprotectResponse(final); err != nil {
		t.Fatalf("final response: %v", err)
	}
	if _, err := cex.UnprotectResponse(notify(11, "24")); !errors.Is(err, ErrReplay) {
		t.Errorf("notification after the final response: err = %v, want ErrReplay", err)
	}
}

func TestNotificationToPlainRequest(t *testing.T) {
	client, server := pair(t, nil)
	preq, cex, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	_, sex, err := server.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	n := msg(coap.Acknowledgement, coap.Content, "x", opt(coap.Observe, "\x01"))
	if _, err := sex.ProtectResponse(n); !errors.Is(err, ErrMessage) {
		t.Errorf("server: err = %v, want ErrMessage", err)
	}
	// A server that sends one anyway is stopped at the client (§4.1.3.5.2).
	sex.observe = true
	pn, err := sex.ProtectResponse(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cex.UnprotectResponse(pn); !errors.Is(err, ErrUnexpectedObserve) {
		t.Errorf("client: err = %v, want ErrUnexpectedObserve", err)
	}
}

func TestExchangeRoles(t *testing.T) {
	client, server := pair(t, nil)
	preq, cex, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	_, sex, _ := server.UnprotectRequest(preq)
	if _, err := cex.ProtectResponse(msg(coap.Acknowledgement, coap.Content, "")); !errors.Is(err, ErrMessage) {
		t.Errorf("client exchange protected a response: %v", err)
	}
	if _, err := sex.UnprotectResponse(preq); !errors.Is(err, ErrMessage) {
		t.Errorf("server exchange verified a response: %v", err)
	}
	if _, err := sex.ProtectResponse(msg(coap.Acknowledgement, coap.GET, "")); !errors.Is(err, ErrMessage) {
		t.Errorf("request code as response: %v", err)
	}
}

func TestWrongDirectionDoesNotVerify(t *testing.T) {
	client, _ := pair(t, nil)
	preq, cex, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	// A request reflected back to the client as its "response".
	if _, err := cex.UnprotectResponse(preq); err == nil {
		t.Error("a reflected request verified as a response")
	}
	if _, _, err := client.UnprotectRequest(preq); err == nil {
		t.Error("a client verified its own request")
	}
}

func TestKIDContextSelectsContext(t *testing.T) {
	c1, s1 := pair(t, h("0a"))
	c2, s2 := pair(t, h("0b"))
	var ring Keyring
	ring.Add(s1)
	ring.Add(s2)
	ring.Add(s2)
	for i, c := range []*Context{c1, c2} {
		preq, _, _ := c.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
		_, ex, err := ring.UnprotectRequest(preq)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if want := []*Context{s1, s2}[i]; ex.Context() != want {
			t.Errorf("client %d verified by the wrong context", i)
		}
	}
	c3, _ := pair(t, h("0c"))
	preq, _, _ := c3.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	if _, _, err := ring.UnprotectRequest(preq); !errors.Is(err, ErrUnknownKID) {
		t.Errorf("unknown ID context: err = %v, want ErrUnknownKID", err)
	}
	ring.Remove(s1)
	preq, _, _ = c1.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	if _, _, err := ring.UnprotectRequest(preq); !errors.Is(err, ErrUnknownKID) {
		t.Errorf("removed context: err = %v, want ErrUnknownKID", err)
	}
}

func TestKeyringTriesContextsSharingARecipientID(t *testing.T) {
	// Without kid context the two contexts differ only in the secret.
	client, server := pair(t, nil)
	other := Params{MasterSecret: bytes.Repeat([]byte{9}, 16), SenderID: h("5e"), RecipientID: h("c1")}
	decoy, err := NewContext(Config{Params: other})
	if err != nil {
		t.Fatal(err)
	}
	var ring Keyring
	ring.Add(decoy)
	ring.Add(server)
	preq, _, _ := client.ProtectRequest(msg(coap.Confirmable, coap.GET, ""))
	if _, ex, err := ring.UnprotectRequest(preq); err != nil || ex.Context() != server {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := ring.UnprotectRequest(preq); !errors.Is(err, ErrReplay) {
		t.Errorf("replay through the ring: err = %v, want ErrReplay", err)
	}
}

func TestErrorResponse(t *testing.T) {
	req := msg(coap.Confirmable, coap.POST, "x")
	tests := []struct {
		err  error
		code coap.Code
		diag string
	}{
		{fmt.Errorf("wrapped: %w", ErrDecode), coap.BadOption, "Failed to decode COSE"},
		{ErrUnknownKID, coap.Unauthorized, "Security context not found"},
		{ErrReplay, coap.Unauthorized, "Replay detected"},
		{ErrDecrypt, coap.BadRequest, "Decryption failed"},
	}
	for _, tt := range tests {
		resp, ok := ErrorResponse(req, tt.err)
		if !ok || resp.Code != tt.code || string(resp.Payload) != tt.diag || resp.Type != coap.Acknowledgement || resp.MID != req.MID {
			t.Errorf("%v: got %v %q ok=%v", tt.err, resp, resp.Payload, ok)
			continue
		}
		if v, ok := resp.Options.Uint(coap.MaxAge); !ok || v != 0 {
			t.Errorf("%v: outer Max-Age %d present=%v, want 0", tt.err, v, ok)
		}
	}
	if _, ok := ErrorResponse(req, ErrNotOSCORE); ok {
		t.Error("ErrNotOSCORE got an OSCORE error response")
	}
	non := msg(coap.NonConfirmable, coap.GET, "")
	if resp, _ := ErrorResponse(non, ErrReplay); resp.Type != coap.NonConfirmable || !bytes.Equal(resp.Token, non.Token) {
		t.Errorf("NON request: response %v", resp)
	}
}

func TestConcurrentUse(t *testing.T) {
	client, server := pair(t, nil)
	server.window = newWindow(1024) // deliveries interleave more than 32 apart
	const workers, each = 8, 50
	reqs := make(chan *coap.Message, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				m, _, err := client.ProtectRequest(msg(coap.NonConfirmable, coap.GET, "", opt(coap.URIPath, "x")))
				if err != nil {
					t.Error(err)
					return
				}
				reqs <- m
			}
		})
	}
	wg.Wait()
	close(reqs)
	var all []*coap.Message
	seen := map[string]bool{}
	for m := range reqs {
		v, _ := m.Options.Get(coap.OSCORE)
		if seen[string(v)] {
			t.Fatalf("Partial IV reused: %x", v)
		}
		seen[string(v)] = true
		all = append(all, m)
	}
	// Every request delivered twice, concurrently: each verifies once.
	var mu sync.Mutex
	accepted := 0
	for range 2 {
		for i := range workers {
			wg.Go(func() {
				for j := i; j < len(all); j += workers {
					_, _, err := server.UnprotectRequest(all[j])
					switch {
					case err == nil:
						mu.Lock()
						accepted++
						mu.Unlock()
					case !errors.Is(err, ErrReplay):
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	if accepted != len(all) {
		t.Errorf("accepted %d of %d distinct requests", accepted, len(all))
	}
}
