package bridge

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// withURI gives the options SetOptions gives after Proxy-Uri is removed:
// the same values in the same order, for random requests.
func TestWithURIMatchesSetOptions(t *testing.T) {
	ids := []coap.OptionID{coap.IfMatch, coap.URIHost, coap.ETag, coap.IfNoneMatch, coap.Observe, coap.URIPort,
		coap.URIPath, coap.ContentFormat, coap.URIQuery, coap.HopLimit, coap.Accept, coap.ProxyURI, coap.Block2, coap.Size1, 2049}
	uris := []string{"coap://127.0.0.1/", "coap://example.org:5700/a/b?x=1&y", "coap://[::1]/s?q", "coap://h/a/b/c/d/e"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		var in coap.Options
		for n := rng.IntN(8); n > 0; n-- {
			in = in.Insert(ids[rng.IntN(len(ids))], []byte{byte(rng.IntN(256))})
		}
		u, err := coap.ParseURI(uris[rng.IntN(len(uris))])
		if err != nil {
			t.Fatal(err)
		}
		want := u.SetOptions(append(coap.Options(nil), in...).Remove(coap.ProxyURI), u.Port)
		got := withURI(in, u.SetOptions(nil, u.Port))
		if !got.Equal(want) {
			t.Fatalf("withURI(%v, %s) = %v, want %v", in, u, got, want)
		}
	}
}

func TestURICacheIsBoundedAndShared(t *testing.T) {
	var c uriCache
	a, err := c.parse([]byte("coap://127.0.0.1:5799/bench?x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.parse([]byte("coap://127.0.0.1:5799/bench?x"))
	if a != b {
		t.Fatal("the same Proxy-Uri was parsed twice")
	}
	if a.u.Port != 5799 || len(a.opts) != 2 || a.opts[0].ID != coap.URIPath || a.opts[1].ID != coap.URIQuery {
		t.Fatalf("parsed %+v with options %v", a.u, a.opts)
	}
	for i := 0; i < 3*maxParsedURIs; i++ {
		if _, err := c.parse(fmt.Appendf(nil, "coap://127.0.0.1/r%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > maxParsedURIs {
		t.Fatalf("%d parsed URIs kept, bound %d", n, maxParsedURIs)
	}
	if _, err := c.parse([]byte("coap://")); err == nil {
		t.Fatal("a URI without host parsed")
	}
	if _, ok := c.m["coap://"]; ok {
		t.Fatal("a value that failed to parse was kept")
	}
}
