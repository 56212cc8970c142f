package coap

import "testing"

// Known's bit set agrees with the registry for every option number.
func TestKnownMatchesTheRegistry(t *testing.T) {
	for id := range 1 << 16 {
		_, want := optionDefs[OptionID(id)]
		if got := OptionID(id).Known(); got != want {
			t.Fatalf("Option %d: Known %v, registry %v", id, got, want)
		}
	}
	for _, id := range []OptionID{IfMatch, URIPath, OSCORE, HopLimit, Echo, RequestTag, NoResponse} {
		if !id.Known() {
			t.Errorf("%v not known", id)
		}
	}
}
