package coap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeKeepsEveryOptionAsRawBytes(t *testing.T) {
	// CON GET mid=0x1234 token=0xab, options: Uri-Path "a", an unknown
	// critical option 2053 (delta 2042, length 2), Uri-Path repeated
	// out of any registry's knowledge, and a payload.
	m := &Message{Type: Confirmable, Code: GET, MID: 0x1234, Token: []byte{0xab}}
	m.Options = m.Options.Insert(URIPath, []byte("a"))
	m.Options = m.Options.Insert(URIPath, []byte("b"))
	m.Options = m.Options.Insert(OSCORE, []byte{0x09, 0x14})
	m.Options = m.Options.Insert(2053, []byte{1, 2})
	m.Options = m.Options.Insert(0, nil) // reserved number 0 is kept too
	m.Payload = []byte("hello")
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var d Message
	if err := d.Decode(b); err != nil {
		t.Fatal(err)
	}
	if !d.Options.Equal(m.Options) || !bytes.Equal(d.Payload, m.Payload) || d.MID != m.MID || !bytes.Equal(d.Token, m.Token) {
		t.Fatalf("round trip changed the message:\n got %v %v\nwant %v %v", d.String(), d.Options, m.String(), m.Options)
	}
	again, _ := d.Marshal()
	if !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"short header", "4001", ErrTruncated},
		{"version 2", "80010001", ErrVersion},
		{"token length 9", "49010001", ErrTokenLength},
		{"token truncated", "44010001aabb", ErrTruncated},
		{"marker without payload", "40010001ff", ErrPayloadMarker},
		{"option length 15", "400100011f", ErrOptionFormat},
		{"option value truncated", "4001000113ab", ErrTruncated},
		{"extended delta truncated", "40010001d0", ErrTruncated},
		{"empty with payload", "40000001ff00", ErrEmptyNotEmpty},
		{"option number over 65535", "40010001e0ffffe0ffff", ErrOptionFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := m.Decode(mustHex(t, tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(%s) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestOptionClasses(t *testing.T) {
	// RFC 7252 §5.4.6 Figure 11 and the §5.10 table.
	if !URIHost.Critical() || !URIHost.Unsafe() || IfNoneMatch.NoCacheKey() {
		t.Fatal("Uri-Host must be critical and unsafe")
	}
	if !Size1.NoCacheKey() || !Size2.NoCacheKey() {
		t.Fatal("Size1 and Size2 are NoCacheKey")
	}
	if ETag.Critical() || ETag.Unsafe() || Observe.Critical() {
		t.Fatal("ETag is elective and safe")
	}
	if !OSCORE.Critical() || OSCORE.Unsafe() || OSCORE.NoCacheKey() {
		t.Fatal("OSCORE (9) is critical, safe to forward and a cache key (RFC 8613 §2)")
	}
	if HopLimit.Critical() || HopLimit.Unsafe() || HopLimit.NoCacheKey() {
		t.Fatal("Hop-Limit (16) is elective, safe and a cache key (RFC 8768 §3)")
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"40011234",
		"4401a1b2aabbccddb474656d70",
		"5801000112345678abcdef01b1613d0304ff68656c6c6f",
		"4402000aaabbccdd3d05312e322e3f76ff01",
		"4402000a0102030439636f6170647374d8180a",
	} {
		f.Add(mustHex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if err := m.Decode(b); err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		var m2 Message
		if err := m2.Decode(out); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !m2.Options.Equal(m.Options) || !bytes.Equal(m2.Payload, m.Payload) || !bytes.Equal(m2.Token, m.Token) ||
			m2.Code != m.Code || m2.Type != m.Type || m2.MID != m.MID {
			t.Fatalf("decode→encode→decode changed the message")
		}
		// The wire form is canonical except for a lone trailing payload
		// marker, which Decode rejects, so encoding reproduces the input.
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}
