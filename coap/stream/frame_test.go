package stream

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The encoded examples of RFC 8323: Figure 5 (2.03, token 7f), Figure 11
// (Ping, token 42) and Figure 12 (Pong).
func TestFrameMatchesTheRFCExamples(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    coap.Message
		want string
	}{
		{"figure 5", coap.Message{Code: coap.Valid, Token: []byte{0x7f}}, "01437f"},
		{"figure 11 ping", coap.Message{Code: Ping, Token: []byte{0x42}}, "01e242"},
		{"figure 12 pong", coap.Message{Code: Pong, Token: []byte{0x42}}, "01e342"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendFrame(nil, &tt.m, false)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Fatalf("got %x, want %s", got, tt.want)
			}
			var d coap.Message
			if err := Decode(&d, got, false); err != nil {
				t.Fatal(err)
			}
			if d.Code != tt.m.Code || !bytes.Equal(d.Token, tt.m.Token) {
				t.Fatalf("decoded %v", d.String())
			}
		})
	}
}

// Each length form of §3.2: 0-12 in the nibble, then 13 + one byte, 269 +
// two bytes, 65805 + four bytes; the boundaries on both sides.
func TestFrameLengthForms(t *testing.T) {
	for _, n := range []int{0, 1, 12, 13, 14, 268, 269, 270, 65804, 65805, 65806, 200000} {
		m := &coap.Message{Code: coap.Content, Token: []byte{1, 2, 3}}
		m.Options = m.Options.SetUint(coap.ContentFormat, 42)
		if n > 0 {
			// Options take 2 bytes, the marker 1: the payload fills the rest.
			pay := max(n-3, 1)
			m.Payload = bytes.Repeat([]byte{'x'}, pay)
		}
		body := m.Size() - 4 - len(m.Token)
		for _, ws := range []bool{false, true} {
			f, err := AppendFrame([]byte("prefix"), m, ws)
			if err != nil {
				t.Fatal(err)
			}
			if string(f[:6]) != "prefix" {
				t.Fatalf("body %d: the bytes before the frame changed: %q", body, f[:6])
			}
			f = f[6:]
			if len(f) != Size(m, ws) {
				t.Fatalf("body %d ws=%v: frame of %d bytes, Size says %d", body, ws, len(f), Size(m, ws))
			}
			if !ws {
				hdr, size, err := FrameSize(f)
				if err != nil || size != len(f) || hdr != headerLen(body, false) {
					t.Fatalf("body %d: FrameSize = %d, %d, %v; frame %d bytes", body, hdr, size, err, len(f))
				}
				wantNibble := map[int]byte{2: byte(body), 3: 13, 4: 14, 6: 15}[hdr]
				if f[0]>>4 != wantNibble {
					t.Fatalf("body %d: Len nibble %d, want %d", body, f[0]>>4, wantNibble)
				}
			} else if f[0]>>4 != 0 {
				t.Fatalf("WebSocket frame with Len %d", f[0]>>4)
			}
			var d coap.Message
			if err := Decode(&d, f, ws); err != nil {
				t.Fatalf("body %d ws=%v: %v", body, ws, err)
			}
			if d.Code != m.Code || !bytes.Equal(d.Payload, m.Payload) || !d.Options.Equal(m.Options) || !bytes.Equal(d.Token, m.Token) {
				t.Fatalf("body %d ws=%v: round trip changed the message", body, ws)
			}
		}
	}
}

func TestDecodeRejectsMalformedFrames(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		ws   bool
		want error
	}{
		{"one byte", "01", false, coap.ErrTruncated},
		{"token length 9", "0945", false, coap.ErrTokenLength},
		{"length past the end", "3145ff", false, coap.ErrTruncated},
		{"bytes after the frame", "0145aabb", false, coap.ErrTruncated},
		{"extended length missing", "d1", false, coap.ErrTruncated},
		{"marker without payload", "1045ff", false, coap.ErrPayloadMarker},
		{"option length 15", "10451f", false, coap.ErrOptionFormat},
		{"websocket with Len", "1045ff", true, ErrWSLength},
		{"websocket token truncated", "0245aa", true, coap.ErrTruncated},
		{"empty with token", "0100aa", false, coap.ErrEmptyNotEmpty},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var m coap.Message
			if err := Decode(&m, unhex(t, tt.in), tt.ws); !errors.Is(err, tt.want) {
				t.Fatalf("Decode(%s) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

// Unknown options, repeats and option 0 travel as raw bytes in order,
// as over UDP: a proxy re-encodes what arrived, not what it understood.
func TestFrameKeepsOptionsRaw(t *testing.T) {
	m := &coap.Message{Code: coap.GET, Token: []byte{9}}
	m.Options = m.Options.Insert(0, nil)
	m.Options = m.Options.Insert(coap.URIPath, []byte("a"))
	m.Options = m.Options.Insert(coap.URIPath, []byte("a"))
	m.Options = m.Options.Insert(coap.OSCORE, []byte{0x09, 0x14})
	m.Options = m.Options.Insert(65000, []byte{1, 2, 3})
	m.Payload = []byte{0xff, 0x00}
	f, err := AppendFrame(nil, m, false)
	if err != nil {
		t.Fatal(err)
	}
	var d coap.Message
	if err := Decode(&d, f, false); err != nil {
		t.Fatal(err)
	}
	if !d.Options.Equal(m.Options) {
		t.Fatalf("options %v, want %v", d.Options, m.Options)
	}
	again, _ := AppendFrame(nil, &d, false)
	if !bytes.Equal(again, f) {
		t.Fatalf("re-encoding differs:\n%x\n%x", again, f)
	}
}

// A frame decoded and encoded again is the same bytes, both framings.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"01437f",           // RFC 8323 figure 5
		"01e242",           // figure 11
		"00e1",             // an empty CSM
		"30e1220480",       // CSM: Max-Message-Size 1152, Block-Wise-Transfer
		"d1000146ff",       // extended length form
		"5104cafe0b6100b1", // GET with Uri-Path
		"14017f1061ff7878",
	} {
		f.Add(unhex(f, s), false)
	}
	csm, _ := AppendFrame(nil, &coap.Message{Code: CSM, Options: coap.Options{{ID: MaxMessageSize, Value: coap.EncodeUint(8192)}, {ID: BlockWiseTransfer}}}, false)
	f.Add(csm, false)
	f.Add(unhex(f, "01437f"), true)
	f.Add(unhex(f, "0245aabbff01"), true)
	f.Fuzz(func(t *testing.T, b []byte, ws bool) {
		var m coap.Message
		if err := Decode(&m, b, ws); err != nil {
			return
		}
		if len(b) > 0 && !ws {
			if _, size, err := FrameSize(b); err != nil || size != len(b) {
				t.Fatalf("decoded a frame FrameSize measures as %d, %v", size, err)
			}
		}
		out, err := AppendFrame(nil, &m, ws)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip differs:\n in %x\nout %x", b, out)
		}
		if Size(&m, ws) != len(out) {
			t.Fatalf("Size %d, frame %d", Size(&m, ws), len(out))
		}
	})
}
