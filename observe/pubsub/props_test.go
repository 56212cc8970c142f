package pubsub

import (
	"encoding/hex"
	"reflect"
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

// The configuration of draft §2.5.1's example, encoded by hand:
// {0: "living-room-sensor", 1: "/ps/data/1bd0d6d", 2: "core.ps.data",
// 3: 112, 4: "temperature", 5: 1(1680393599), 6: 100}.
const draftExample = "a7" +
	"00" + "72" + "6c6976696e672d726f6f6d2d73656e736f72" +
	"01" + "70" + "2f70732f646174612f31626430643664" +
	"02" + "6c" + "636f72652e70732e64617461" +
	"03" + "1870" +
	"04" + "6b" + "74656d7065726174757265" +
	"05" + "c11a6428c57f" +
	"06" + "1864"

func TestDecodePropertiesDraftExample(t *testing.T) {
	p, err := DecodeProperties(mustHex(t, draftExample))
	if err != nil {
		t.Fatal(err)
	}
	if *p.TopicName != "living-room-sensor" || *p.TopicData != "/ps/data/1bd0d6d" || *p.ResourceType != RTData ||
		*p.TopicContentFormat != 112 || *p.TopicType != "temperature" || *p.ExpirationDate != 1680393599 || *p.MaxSubscribers != 100 {
		t.Fatalf("%+v", p)
	}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(b) != draftExample {
		t.Fatalf("re-encoded\n %x\nwant %s", b, draftExample)
	}
	// initialize 0x4180 (<<[]>>) and a float epoch.
	p, err = DecodeProperties(mustHex(t, "a2084180"+"05c1fb41d9000000a00000"))
	if err != nil || len(p.Initialize) != 1 || p.Initialize[0] != 0x80 {
		t.Fatalf("initialize: %v %x", err, p.Initialize)
	}
	if *p.ExpirationDate != 1677721602.5 {
		t.Fatalf("float epoch %v", *p.ExpirationDate)
	}
}

func TestDecodePropertiesRejectsMalformed(t *testing.T) {
	for name, h := range map[string]string{
		"empty":                 "",
		"array":                 "80",
		"text key":              "a16a746f7069632d6e616d6561",
		"unknown key":           "a1186301",
		"negative key":          "a12001",
		"duplicate key":         "a2006161006162",
		"indefinite map":        "bf006161ff",
		"name is bytes":         "a1004161",
		"name invalid utf-8":    "a10061ff",
		"cf over 65535":         "a1031a00010000",
		"cf negative":           "a10320",
		"max-subscribers float": "a106f93c00",
		"observer-check zero":   "a10700",
		"expiration untagged":   "a1051a6428a57f",
		"expiration tag 0":      "a105c0781a323032332d30342d30315432333a35393a35395a",
		"expiration negative":   "a105c120",
		"expiration NaN":        "a105c1f97e00",
		"expiration infinite":   "a105c1f97c00",
		"expiration huge":       "a105c11bffffffffffffffff",
		"initialize text":       "a1086180",
		"trailing bytes":        "a0a0",
		"truncated":             "a10072",
		"too deep":              "a1048181818180",
	} {
		if _, err := DecodeProperties(mustHex(t, h)); err == nil {
			t.Errorf("%s: accepted %s", name, h)
		}
	}
}

func TestDecodeKeyList(t *testing.T) {
	keys, err := DecodeKeyList(mustHex(t, "820103"))
	if err != nil || !reflect.DeepEqual(keys, []int64{1, 3}) {
		t.Fatalf("%v %v", keys, err)
	}
	for _, h := range []string{"", "a0", "8161ff", "9f01ff", "91" + "000102030405060708090a0b0c0d0e0f10"} {
		if _, err := DecodeKeyList(mustHex(t, h)); err == nil {
			t.Errorf("accepted %s", h)
		}
	}
}

// FuzzDecodeProperties: no input panics, and whatever decodes encodes to
// something that decodes to the same properties and encodes the same.
func FuzzDecodeProperties(f *testing.F) {
	f.Add(mustHex(f, draftExample))
	f.Add(mustHex(f, "a2084180"+"05c1fb41d9000000a00000"))
	f.Add(mustHex(f, "a200656d7976617202"+"6c636f72652e70732e64617461"))
	f.Add(mustHex(f, "a2006161006162"))
	f.Add(mustHex(f, "a105c1f93c00"))
	f.Add(mustHex(f, "820103"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeProperties(b)
		if err != nil {
			return
		}
		e1, err := p.Encode()
		if err != nil {
			t.Fatalf("encode %+v: %v", p, err)
		}
		p2, err := DecodeProperties(e1)
		if err != nil {
			t.Fatalf("re-decode %x: %v", e1, err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed %x:\n%+v\n%+v", b, p, p2)
		}
		e2, err := p2.Encode()
		if err != nil || string(e1) != string(e2) {
			t.Fatalf("encoding not stable: %x vs %x", e1, e2)
		}
		if !p.matches(&p2) || !p2.matches(&p) {
			t.Fatal("a configuration does not match itself")
		}
	})
}

// FuzzDecodeKeyList: no input panics.
func FuzzDecodeKeyList(f *testing.F) {
	f.Add(mustHex(f, "820103"))
	f.Add(mustHex(f, "80"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := DecodeKeyList(b)
		if err == nil && len(keys) > maxKeyList {
			t.Fatalf("%d keys", len(keys))
		}
	})
}
