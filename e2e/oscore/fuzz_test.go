package oscore

import (
	"bytes"
	"slices"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// FuzzParseOptionValue checks that no input panics the parser and that
// whatever it accepts encodes back to the same bytes and parses to the same
// value (parse, encode, parse).
func FuzzParseOptionValue(f *testing.F) {
	for _, s := range []string{"", "0914", "091400", "19140837cbf3210017a2d3", "0100", "00", "1800", "05ffffffffff", "4905c1"} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseOptionValue(b)
		if err != nil {
			return
		}
		enc, err := v.Append(nil)
		if err != nil {
			t.Fatalf("accepted %x but cannot encode it: %v", b, err)
		}
		if !bytes.Equal(enc, b) || v.Len() != len(b) {
			t.Fatalf("%x encodes back as %x (Len %d)", b, enc, v.Len())
		}
		w, err := ParseOptionValue(enc)
		if err != nil || !optionValueEqual(v, w) {
			t.Fatalf("re-parse of %x: %+v, %v; want %+v", enc, w, err, v)
		}
	})
}

// fuzzGenuine are the protected messages of Appendix C: the only ones the
// fuzz targets may see verify. Their unprotected parts (header, Uri-Host,
// outer options) are not integrity protected, so a mutant may still verify if
// its ciphertext and OSCORE option are those of a genuine message.
func fuzzSeeds(f *testing.F) {
	for _, v := range requestVectors {
		f.Add(h(v.protected))
	}
	for _, v := range responseVectors {
		f.Add(h(v.protected))
	}
	f.Add(h(requestVectors[0].unprotected))
	f.Add([]byte{0x40, 0x02, 0, 0, 0x90, 0xff, 0})
}

// FuzzUnprotectRequest feeds arbitrary datagrams to the servers of
// Appendix C: nothing may panic, and only a genuine request may verify.
func FuzzUnprotectRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m coap.Message
		if m.Decode(b) != nil {
			return
		}
		for _, v := range requestVectors {
			server := vectorContext(t, v.server, 0, false)
			got, ex, err := server.UnprotectRequest(&m)
			if err != nil {
				if got != nil || ex != nil {
					t.Fatalf("error %v with a result", err)
				}
				if _, ok := ErrorResponse(&m, err); !ok && err != ErrNotOSCORE {
					t.Fatalf("error %v has no error response", err)
				}
				continue
			}
			genuine := decode(t, h(v.protected))
			if !bytes.Equal(m.Payload, genuine.Payload) || !optionEqual(&m, genuine) {
				t.Fatalf("%s server accepted a forgery: %x", v.server, b)
			}
			inner := decode(t, h(v.unprotected))
			inner.Options = slices.DeleteFunc(inner.Options, func(o coap.Option) bool { return class(o.ID) == 'U' })
			if !bytes.Equal(marshal(t, got), marshal(t, merge(&m, inner))) {
				t.Fatalf("wrong plaintext for %x", b)
			}
		}
	})
}

// FuzzUnprotectResponse feeds arbitrary datagrams to the client of C.4 as
// responses: nothing may panic, and only C.7 or C.8 may verify.
func FuzzUnprotectResponse(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m coap.Message
		if m.Decode(b) != nil {
			return
		}
		cex, _ := c4Exchanges(t)
		if _, err := cex.UnprotectResponse(&m); err != nil {
			return
		}
		for _, v := range responseVectors {
			genuine := decode(t, h(v.protected))
			if bytes.Equal(m.Payload, genuine.Payload) && optionEqual(&m, genuine) {
				return
			}
		}
		t.Fatalf("client accepted a forged response: %x", b)
	})
}

func optionEqual(a, b *coap.Message) bool {
	x, _ := a.Options.Get(coap.OSCORE)
	y, _ := b.Options.Get(coap.OSCORE)
	return bytes.Equal(x, y)
}
