package mac

import (
	"bytes"
	"testing"
)

// FuzzParseIEs lists the Information Elements of arbitrary version 2
// frames and of arbitrary IE lists. Properties: no panic; every IE's
// content lies within the list; and a list that parses is rebuilt, IE by
// IE, to the same octets (§7.4.1).
func FuzzParseIEs(f *testing.F) {
	for _, v := range frames2015 {
		f.Add(unhex(f, v.wire))
	}
	f.Add(unhex(f, "040d10006400"+"003f"+"039000124b"+"00f8"))
	f.Add(unhex(f, "803f01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fr, err := Decode(b); err == nil && len(fr.IEs) > 0 {
			if _, err := ParseIEs(fr.IEs); err != nil {
				t.Fatalf("Decode accepted IEs % x that ParseIEs refuses: %v", fr.IEs, err)
			}
		}
		ies, err := ParseIEs(b)
		if err != nil {
			return
		}
		var out []byte
		for _, ie := range ies {
			if len(ie.Content) > len(b) {
				t.Fatalf("IE content of %d octets from %d", len(ie.Content), len(b))
			}
			if ie.Payload {
				out, err = AppendPayloadIE(out, ie.ID, ie.Content)
			} else {
				out, err = AppendHeaderIE(out, ie.ID, ie.Content)
			}
			if err != nil {
				t.Fatalf("IE %+v does not encode: %v", ie, err)
			}
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("rebuilt\n % x\nfrom\n % x", out, b)
		}
	})
}
