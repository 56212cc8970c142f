package httpcoap

import (
	"mime"
	"strconv"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
)

// The media type ↔ Content-Format table is coap's (coap.MediaType,
// coap.ContentFormatOf): the MQTT plugin maps with it too.

// OSCOREMediaType is the media type of an OSCORE payload (RFC 8613 §13.5).
const OSCOREMediaType = "application/oscore"

// match is what ContentFormatOf may widen to under cfg.
func match(loose, allowPayload bool) coap.MediaMatch {
	var m coap.MediaMatch
	if loose {
		m |= coap.Generalize
	}
	if allowPayload {
		m |= coap.AllowPayloadType
	}
	return m
}

// acceptFormat picks the CoAP Accept value for an HTTP Accept header: the
// most preferred media type (highest q, first on ties) that maps exactly.
// A wildcard, an empty header or nothing mappable gives ok false: RFC 8075
// §6.1 forwards such a request without Accept.
func acceptFormat(accept string, allowPayload bool) (cf uint16, ok bool) {
	best := -1.0
	for _, part := range strings.Split(accept, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		typ, params, err := mime.ParseMediaType(part)
		if err != nil {
			continue
		}
		q := 1.0
		if s, has := params["q"]; has {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				q = v
			}
			delete(params, "q")
		}
		if typ == "*/*" && q > best {
			// §6.1: */* maps to no Accept option; if it is the most
			// preferred, nothing more specific should win.
			best, ok = q, false
			continue
		}
		if q <= best || q <= 0 || strings.HasSuffix(typ, "/*") {
			continue
		}
		if id, mapped := coap.ContentFormatOf(mime.FormatMediaType(typ, params), "", match(false, allowPayload)); mapped {
			best, cf, ok = q, id, true
		}
	}
	return cf, ok
}
