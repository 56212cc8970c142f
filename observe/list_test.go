package observe

import (
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// Observations lists each observed resource once with its observers,
// most observed first, up to the bound asked for; a protected one says
// so and names only what its outer options show.
func TestObservationsListResourcesWithTheirObservers(t *testing.T) {
	r := newRig(t, Defaults(), coap.Params{})
	client, _ := endpoint(t, "127.0.0.1:0", coap.EndpointConfig{})
	for range 3 {
		observeAt(t, client, r.proxy, get("temp"))
	}
	observeAt(t, client, r.proxy, get("hum"))
	byURI := &coap.Message{Code: coap.GET}
	byURI.Options = byURI.Options.Insert(coap.ProxyURI, []byte("coap://[fd00:db8:1::1]/sensors/temp"))
	observeAt(t, client, r.proxy, byURI)
	prot := &coap.Message{Code: coap.FETCH, Payload: []byte{0xde, 0xad}}
	prot.Options = prot.Options.Insert(coap.URIHost, []byte("fd00:db8:1::2")).Insert(coap.OSCORE, []byte{0x09, 1})
	observeAt(t, client, r.proxy, prot)

	got := r.hub.Observations(10)
	want := map[string]Observation{
		"/temp":                               {Resource: "/temp", Observers: 3},
		"/hum":                                {Resource: "/hum", Observers: 1},
		"coap://[fd00:db8:1::1]/sensors/temp": {Resource: "coap://[fd00:db8:1::1]/sensors/temp", Observers: 1},
		"coap://[fd00:db8:1::2]/":             {Resource: "coap://[fd00:db8:1::2]/", Observers: 1, Protected: true},
	}
	if len(got) != len(want) || got[0] != want["/temp"] {
		t.Fatalf("observations %+v, want /temp first of %d", got, len(want))
	}
	for _, o := range got {
		if want[o.Resource] != o {
			t.Errorf("%+v, want %+v", o, want[o.Resource])
		}
	}
	if got := r.hub.Observations(2); len(got) != 2 || got[0].Resource != "/temp" {
		t.Fatalf("bounded to 2: %+v", got)
	}
}
