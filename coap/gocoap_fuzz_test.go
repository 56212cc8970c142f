package coap

import (
	"bytes"
	"errors"
	"testing"

	gcmsg "github.com/plgd-dev/go-coap/v3/message"
	gcudp "github.com/plgd-dev/go-coap/v3/udp/coder"
)

// goCoapView is what go-coap's decoder would make of our decoding of the
// same bytes: the options it leaves out taken out. These are its known
// differences from gatewayd's codec, which keeps every option raw
// because a proxy must forward what it does not understand (RFC 7252
// §5.4.1, §5.7.1):
//   - an option numbered 0 (reserved) is dropped;
//   - an option go-coap registers with ValueUnknown is dropped;
//   - an elective option of a registered number whose length is outside
//     the registered bounds is dropped (RFC 7252 §5.4.3 lets an endpoint
//     ignore it; a proxy forwards it as it came);
//   - an Empty message (code 0.00) with a token, options or a payload is
//     a message format error here (RFC 7252 §4.1) and taken by go-coap.
func goCoapView(opts Options) Options {
	var out Options
	for _, o := range opts {
		if o.ID == 0 {
			continue
		}
		if def, ok := gcmsg.CoapOptionDefs[gcmsg.OptionID(o.ID)]; ok {
			if def.ValueFormat == gcmsg.ValueUnknown {
				continue
			}
			if n := uint32(len(o.Value)); (n < def.MinLen || n > def.MaxLen) && o.ID%2 == 0 {
				continue
			}
		}
		out = append(out, o)
	}
	return out
}

// FuzzDecodeAgainstGoCoap decodes the same datagram with gatewayd's codec
// and go-coap's (github.com/plgd-dev/go-coap/v3/udp/coder): both accept
// it or both refuse it, and what both accept reads the same, up to the
// differences goCoapView lists.
func FuzzDecodeAgainstGoCoap(f *testing.F) {
	for _, s := range []string{
		"40011234",
		"4401a1b2aabbccddb474656d70",
		"5801000112345678abcdef01b1613d0304ff68656c6c6f",
		"4402000aaabbccdd3d05312e322e3f76ff01",
		"4402000a0102030439636f6170647374d8180a",
		"440100010102030400", // option 0
		"4401000101020304e1ff0001ff",
		"440100010102030461ff",                       // payload marker, no payload
		"44010001010203041c0102030405060708090a0b0c", // ETag of 12 bytes
	} {
		f.Add(mustHex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ours Message
		ourErr := ours.Decode(b)
		theirs := gcmsg.Message{Options: make(gcmsg.Options, 0, len(b)+1)}
		_, theirErr := gcudp.DefaultCoder.Decode(b, &theirs)
		if (ourErr == nil) != (theirErr == nil) {
			if errors.Is(theirErr, gcmsg.ErrOptionsTooSmall) || errors.Is(ourErr, ErrEmptyNotEmpty) {
				return
			}
			t.Fatalf("% x: gatewayd %v, go-coap %v", b, ourErr, theirErr)
		}
		if ourErr != nil {
			return
		}
		if uint8(ours.Type) != uint8(theirs.Type) || uint8(ours.Code) != uint8(theirs.Code) || int32(ours.MID) != theirs.MessageID {
			t.Fatalf("% x: header %v %v %d, go-coap %v %v %d", b, ours.Type, ours.Code, ours.MID, theirs.Type, theirs.Code, theirs.MessageID)
		}
		if !bytes.Equal(ours.Token, theirs.Token) || !bytes.Equal(ours.Payload, theirs.Payload) {
			t.Fatalf("% x: token %x payload %x, go-coap %x %x", b, ours.Token, ours.Payload, []byte(theirs.Token), theirs.Payload)
		}
		want := goCoapView(ours.Options)
		if len(want) != len(theirs.Options) {
			t.Fatalf("% x: options %v, go-coap %v", b, want, theirs.Options)
		}
		for i, o := range want {
			if uint16(o.ID) != uint16(theirs.Options[i].ID) || !bytes.Equal(o.Value, theirs.Options[i].Value) {
				t.Fatalf("% x: option %d: %d=%x, go-coap %d=%x", b, i, o.ID, o.Value, theirs.Options[i].ID, theirs.Options[i].Value)
			}
		}
	})
}
