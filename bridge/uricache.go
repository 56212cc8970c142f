package bridge

import (
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// maxParsedURIs bounds the Proxy-Uri values kept parsed. Past it one entry,
// whichever the map gives, makes room for each new one. A value is at most
// 1034 bytes (RFC 7252 §5.10), so the cache stays under about 1 MB.
const maxParsedURIs = 512

// parsedURI is a Proxy-Uri taken apart (§6.4) and its Uri-* options for a
// target at the URI's own port (PR1.1). Both are shared by every request
// with that Proxy-Uri and never changed.
type parsedURI struct {
	u    *coap.URI
	opts coap.Options
}

// uriCache keeps the Proxy-Uri values lately parsed: the clients of a
// gateway ask for the same few resources again and again, and parsing is
// most of the work a forwarded request costs the proxy's chain. Values
// that fail to parse are not kept.
type uriCache struct {
	mu sync.Mutex
	m  map[string]*parsedURI // guarded by mu
}

func (c *uriCache) parse(pu []byte) (*parsedURI, error) {
	c.mu.Lock()
	p := c.m[string(pu)]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	u, err := coap.ParseURI(string(pu))
	if err != nil {
		return nil, err
	}
	p = &parsedURI{u: u, opts: u.SetOptions(nil, u.Port)}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*parsedURI)
	}
	if len(c.m) >= maxParsedURIs {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(pu)] = p
	c.mu.Unlock()
	return p, nil
}

// withURI is a forwarded request's options for PR1.1: in without Proxy-Uri
// and Uri-*, and uri's options merged in order, in one allocation.
func withURI(in, uri coap.Options) coap.Options {
	out := make(coap.Options, 0, len(in)+len(uri))
	j := 0
	for _, o := range in {
		switch o.ID {
		case coap.ProxyURI, coap.URIHost, coap.URIPort, coap.URIPath, coap.URIQuery:
			continue
		}
		for j < len(uri) && uri[j].ID <= o.ID {
			out = append(out, uri[j])
			j++
		}
		out = append(out, o)
	}
	return append(out, uri[j:]...)
}
