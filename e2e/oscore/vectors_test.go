package oscore

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// h decodes hex as printed in RFC 8613 Appendix C: an optional 0x prefix,
// spaces and line breaks ignored.
func h(s string) []byte {
	s = strings.TrimPrefix(strings.Join(strings.Fields(s), ""), "0x")
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var secret = h("0x0102030405060708090a0b0c0d0e0f10")

// Appendix C.1 to C.3: key derivation, one row per endpoint.
var derivationVectors = []struct {
	name                   string
	params                 Params
	infoSender, infoRecip  string
	infoIV                 string
	senderKey, recipKey    string
	commonIV               string
	senderNonce, recipNnce string
}{
	{
		name:        "C.1.1 client with master salt",
		params:      Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), SenderID: []byte{}, RecipientID: h("01")},
		infoSender:  "8540f60a634b657910",
		infoRecip:   "854101f60a634b657910",
		infoIV:      "8540f60a6249560d",
		senderKey:   "f0910ed7295e6ad4b54fc793154302ff",
		recipKey:    "ffb14e093c94c9cac9471648b4f98710",
		commonIV:    "4622d4dd6d944168eefb54987c",
		senderNonce: "4622d4dd6d944168eefb54987c",
		recipNnce:   "4722d4dd6d944169eefb54987c",
	},
	{
		name:        "C.1.2 server with master salt",
		params:      Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), SenderID: h("01"), RecipientID: []byte{}},
		infoSender:  "854101f60a634b657910",
		infoRecip:   "8540f60a634b657910",
		infoIV:      "8540f60a6249560d",
		senderKey:   "ffb14e093c94c9cac9471648b4f98710",
		recipKey:    "f0910ed7295e6ad4b54fc793154302ff",
		commonIV:    "4622d4dd6d944168eefb54987c",
		senderNonce: "4722d4dd6d944169eefb54987c",
		recipNnce:   "4622d4dd6d944168eefb54987c",
	},
	{
		name:        "C.2.1 client without master salt",
		params:      Params{MasterSecret: secret, SenderID: h("00"), RecipientID: h("01")},
		infoSender:  "854100f60a634b657910",
		infoRecip:   "854101f60a634b657910",
		infoIV:      "8540f60a6249560d",
		senderKey:   "321b26943253c7ffb6003b0b64d74041",
		recipKey:    "e57b5635815177cd679ab4bcec9d7dda",
		commonIV:    "be35ae297d2dace910c52e99f9",
		senderNonce: "bf35ae297d2dace910c52e99f9",
		recipNnce:   "bf35ae297d2dace810c52e99f9",
	},
	{
		name:        "C.2.2 server without master salt",
		params:      Params{MasterSecret: secret, SenderID: h("01"), RecipientID: h("00")},
		infoSender:  "854101f60a634b657910",
		infoRecip:   "854100f60a634b657910",
		infoIV:      "8540f60a6249560d",
		senderKey:   "e57b5635815177cd679ab4bcec9d7dda",
		recipKey:    "321b26943253c7ffb6003b0b64d74041",
		commonIV:    "be35ae297d2dace910c52e99f9",
		senderNonce: "bf35ae297d2dace810c52e99f9",
		recipNnce:   "bf35ae297d2dace910c52e99f9",
	},
	{
		name:        "C.3.1 client with ID context",
		params:      Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), IDContext: h("37cbf3210017a2d3"), SenderID: []byte{}, RecipientID: h("01")},
		infoSender:  "85404837cbf3210017a2d30a634b657910",
		infoRecip:   "8541014837cbf3210017a2d30a634b657910",
		infoIV:      "85404837cbf3210017a2d30a6249560d",
		senderKey:   "af2a1300a5e95788b356336eeecd2b92",
		recipKey:    "e39a0c7c77b43f03b4b39ab9a268699f",
		commonIV:    "2ca58fb85ff1b81c0b7181b85e",
		senderNonce: "2ca58fb85ff1b81c0b7181b85e",
		recipNnce:   "2da58fb85ff1b81d0b7181b85e",
	},
	{
		name:        "C.3.2 server with ID context",
		params:      Params{MasterSecret: secret, MasterSalt: h("9e7ca92223786340"), IDContext: h("37cbf3210017a2d3"), SenderID: h("01"), RecipientID: []byte{}},
		infoSender:  "8541014837cbf3210017a2d30a634b657910",
		infoRecip:   "85404837cbf3210017a2d30a634b657910",
		infoIV:      "85404837cbf3210017a2d30a6249560d",
		senderKey:   "e39a0c7c77b43f03b4b39ab9a268699f",
		recipKey:    "af2a1300a5e95788b356336eeecd2b92",
		commonIV:    "2ca58fb85ff1b81c0b7181b85e",
		senderNonce: "2da58fb85ff1b81d0b7181b85e",
		recipNnce:   "2ca58fb85ff1b81c0b7181b85e",
	},
}

func TestDerivationMatchesRFC8613AppendixC(t *testing.T) {
	for _, v := range derivationVectors {
		t.Run(v.name, func(t *testing.T) {
			p := v.params
			check := func(what string, got []byte, want string) {
				t.Helper()
				if !bytes.Equal(got, h(want)) {
					t.Errorf("%s = %x, want %s", what, got, want)
				}
			}
			in, err := info(bstr(p.SenderID), p.IDContext, "Key", 16)
			if err != nil {
				t.Fatal(err)
			}
			check("info (sender key)", in, v.infoSender)
			in, _ = info(bstr(p.RecipientID), p.IDContext, "Key", 16)
			check("info (recipient key)", in, v.infoRecip)
			in, _ = info([]byte{}, p.IDContext, "IV", 13)
			check("info (common IV)", in, v.infoIV)

			c, err := NewContext(Config{Params: p})
			if err != nil {
				t.Fatal(err)
			}
			check("sender key", c.senderKey, v.senderKey)
			check("recipient key", c.recipientKey, v.recipKey)
			check("common IV", c.commonIV[:], v.commonIV)
			sn := c.nonce(c.senderID, encodePIV(0))
			check("sender nonce", sn[:], v.senderNonce)
			rn := c.nonce(c.recipientID, encodePIV(0))
			check("recipient nonce", rn[:], v.recipNnce)
		})
	}
}

func vectorContext(t testing.TB, name string, seq uint64, sendKIDCtx bool) *Context {
	t.Helper()
	for _, v := range derivationVectors {
		if strings.HasPrefix(v.name, name+" ") {
			c, err := NewContext(Config{Params: v.params, SendKIDContext: sendKIDCtx})
			if err != nil {
				t.Fatal(err)
			}
			c.seq = seq
			return c
		}
	}
	t.Fatalf("no vector %s", name)
	return nil
}

func decode(t testing.TB, b []byte) *coap.Message {
	t.Helper()
	var m coap.Message
	if err := m.Decode(b); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return &m
}

func marshal(t testing.TB, m *coap.Message) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Appendix C.4 to C.6: protected requests.
var requestVectors = []struct {
	name           string
	client, server string
	sendKIDCtx     bool
	unprotected    string
	aad, nonce     string
	option         string
	protected      string
}{
	{
		name: "C.4 request, context C.1", client: "C.1.1", server: "C.1.2",
		unprotected: "0x44015d1f00003974396c6f63616c686f737483747631",
		aad:         "0x8368456e63727970743040488501810a40411440",
		nonce:       "0x4622d4dd6d944168eefb549868",
		option:      "0914",
		protected: `0x44025d1f00003974396c6f6
			3616c686f7374620914ff612f1092f1776f1c1668b3825e`,
	},
	{
		name: "C.5 request, context C.2", client: "C.2.1", server: "C.2.2",
		unprotected: "0x440171c30000b932396c6f63616c686f737483747631",
		aad:         "0x8368456e63727970743040498501810a4100411440",
		nonce:       "0xbf35ae297d2dace910c52e99ed",
		option:      "091400",
		protected: `0x440271c30000b932396c6f6
			3616c686f737463091400ff4ed339a5a379b0b8bc731fffb0`,
	},
	{
		name: "C.6 request with kid context, context C.3", client: "C.3.1", server: "C.3.2", sendKIDCtx: true,
		unprotected: "0x44012f8eef9bbf7a396c6f63616c686f737483747631",
		aad:         "0x8368456e63727970743040488501810a40411440",
		nonce:       "0x2ca58fb85ff1b81c0b7181b84a",
		option:      "19140837cbf3210017a2d3",
		protected: `0x44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff
			72cd7273fd331ac45cffbe55c3`,
	},
}

func TestProtectRequestMatchesRFC8613AppendixC(t *testing.T) {
	for _, v := range requestVectors {
		t.Run(v.name, func(t *testing.T) {
			client := vectorContext(t, v.client, 20, v.sendKIDCtx)
			req := decode(t, h(v.unprotected))
			before := marshal(t, req)
			out, ex, err := client.ProtectRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := marshal(t, out); !bytes.Equal(got, h(v.protected)) {
				t.Errorf("protected\n got %x\nwant %x", got, h(v.protected))
			}
			if got, _ := out.Options.Get(coap.OSCORE); !bytes.Equal(got, h(v.option)) {
				t.Errorf("OSCORE option = %x, want %s", got, v.option)
			}
			if !bytes.Equal(ex.nonce[:], h(v.nonce)) {
				t.Errorf("nonce = %x, want %s", ex.nonce, v.nonce)
			}
			aad, _ := externalAAD(ex.kid, ex.piv)
			if !bytes.Equal(aad, h(v.aad)) {
				t.Errorf("AAD = %x, want %s", aad, v.aad)
			}
			if !bytes.Equal(marshal(t, req), before) {
				t.Error("ProtectRequest modified its input")
			}
			if client.Seq() != 21 {
				t.Errorf("sender sequence number = %d after one request, want 21", client.Seq())
			}
		})
	}
}

func TestUnprotectRequestMatchesRFC8613AppendixC(t *testing.T) {
	for _, v := range requestVectors {
		t.Run(v.name, func(t *testing.T) {
			server := vectorContext(t, v.server, 0, false)
			wire := h(v.protected)
			got, ex, err := server.UnprotectRequest(decode(t, wire))
			if err != nil {
				t.Fatal(err)
			}
			if b := marshal(t, got); !bytes.Equal(b, h(v.unprotected)) {
				t.Errorf("unprotected\n got %x\nwant %x", b, h(v.unprotected))
			}
			if !bytes.Equal(ex.nonce[:], h(v.nonce)) {
				t.Errorf("nonce = %x, want %s", ex.nonce, v.nonce)
			}
			if _, _, err := server.UnprotectRequest(decode(t, wire)); !errorsIs(err, ErrReplay) {
				t.Errorf("second copy: err = %v, want ErrReplay", err)
			}
		})
	}
}

// Appendix C.7 and C.8: responses to the request of C.4.
var responseVectors = []struct {
	name        string
	withPIV     bool
	unprotected string
	nonce       string
	option      string
	protected   string
}{
	{
		name:        "C.7 response without Partial IV",
		unprotected: "0x64455d1f00003974ff48656c6c6f20576f726c6421",
		nonce:       "0x4622d4dd6d944168eefb549868",
		option:      "",
		protected:   "0x64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106",
	},
	{
		name:        "C.8 response with Partial IV",
		withPIV:     true,
		unprotected: "0x64455d1f00003974ff48656c6c6f20576f726c6421",
		nonce:       "0x4722d4dd6d944169eefb54987c",
		option:      "0100",
		protected: `0x64445d1f00003974920100
			ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e`,
	},
}

// c4Exchanges runs the C.4 request through a fresh client and server.
func c4Exchanges(t testing.TB) (client, server *Exchange) {
	t.Helper()
	v := requestVectors[0]
	cctx := vectorContext(t, "C.1.1", 20, false)
	sctx := vectorContext(t, "C.1.2", 0, false)
	preq, cex, err := cctx.ProtectRequest(decode(t, h(v.unprotected)))
	if err != nil {
		t.Fatal(err)
	}
	_, sex, err := sctx.UnprotectRequest(preq)
	if err != nil {
		t.Fatal(err)
	}
	return cex, sex
}

func TestProtectResponseMatchesRFC8613AppendixC(t *testing.T) {
	for _, v := range responseVectors {
		t.Run(v.name, func(t *testing.T) {
			_, sex := c4Exchanges(t)
			resp := decode(t, h(v.unprotected))
			var out *coap.Message
			var err error
			if v.withPIV {
				out, err = sex.ProtectResponseWithPIV(resp)
			} else {
				out, err = sex.ProtectResponse(resp)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := marshal(t, out); !bytes.Equal(got, h(v.protected)) {
				t.Errorf("protected\n got %x\nwant %x", got, h(v.protected))
			}
			if got, _ := out.Options.Get(coap.OSCORE); !bytes.Equal(got, h(v.option)) {
				t.Errorf("OSCORE option = %x, want %s", got, v.option)
			}
			aad, _ := externalAAD(sex.kid, sex.piv)
			if want := h("0x8368456e63727970743040488501810a40411440"); !bytes.Equal(aad, want) {
				t.Errorf("AAD = %x, want %x", aad, want)
			}
		})
	}
}

func TestUnprotectResponseMatchesRFC8613AppendixC(t *testing.T) {
	for _, v := range responseVectors {
		t.Run(v.name, func(t *testing.T) {
			cex, _ := c4Exchanges(t)
			wire := h(v.protected)
			got, err := cex.UnprotectResponse(decode(t, wire))
			if err != nil {
				t.Fatal(err)
			}
			if b := marshal(t, got); !bytes.Equal(b, h(v.unprotected)) {
				t.Errorf("unprotected\n got %x\nwant %x", b, h(v.unprotected))
			}
			if _, err := cex.UnprotectResponse(decode(t, wire)); !errorsIs(err, ErrReplay) {
				t.Errorf("second copy: err = %v, want ErrReplay", err)
			}
		})
	}
}

// The §5.4 example: request_kid 0x00, request_piv 0x25.
func TestExternalAADMatchesSection5_4Example(t *testing.T) {
	got, err := externalAAD(h("00"), h("25"))
	if err != nil {
		t.Fatal(err)
	}
	if want := h("0x8368456e63727970743040498501810a4100412540"); !bytes.Equal(got, want) {
		t.Errorf("AAD = %x, want %x", got, want)
	}
}
