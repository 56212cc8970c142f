package http

import (
	"mime"
	"strconv"
	"strings"
)

// contentFormat is one row of the CoAP Content-Formats registry (RFC 7252
// §12.3 and later registrations) that this package maps.
type contentFormat struct {
	id       uint16
	media    string // media type with parameters, canonical form
	encoding string // HTTP content coding; "" is identity
}

// formats holds only registrations whose numbers were checked against the
// registering documents; a number not listed here travels as
// application/coap-payload;cf=N (RFC 8075 §6.2).
var formats = []contentFormat{
	{0, "text/plain;charset=utf-8", ""},                    // RFC 7252
	{16, `application/cose;cose-type="cose-encrypt0"`, ""}, // RFC 9052
	{17, `application/cose;cose-type="cose-mac0"`, ""},     // RFC 9052
	{18, `application/cose;cose-type="cose-sign1"`, ""},    // RFC 9052
	{40, "application/link-format", ""},                    // RFC 6690
	{41, "application/xml", ""},                            // RFC 7252
	{42, "application/octet-stream", ""},                   // RFC 7252
	{47, "application/exi", ""},                            // RFC 7252
	{50, "application/json", ""},                           // RFC 7252
	{51, "application/json-patch+json", ""},                // RFC 8132
	{52, "application/merge-patch+json", ""},               // RFC 8132
	{60, "application/cbor", ""},                           // RFC 7049
	{61, "application/cwt", ""},                            // RFC 8392
	{62, "application/multipart-core", ""},                 // RFC 8710
	{63, "application/cbor-seq", ""},                       // RFC 8742
	{96, `application/cose;cose-type="cose-encrypt"`, ""},  // RFC 9052
	{97, `application/cose;cose-type="cose-mac"`, ""},      // RFC 9052
	{98, `application/cose;cose-type="cose-sign"`, ""},     // RFC 9052
	{101, "application/cose-key", ""},                      // RFC 9052
	{102, "application/cose-key-set", ""},                  // RFC 9052
	{110, "application/senml+json", ""},                    // RFC 8428
	{111, "application/sensml+json", ""},                   // RFC 8428
	{112, "application/senml+cbor", ""},                    // RFC 8428
	{113, "application/sensml+cbor", ""},                   // RFC 8428
	{10001, "application/oscore", ""},                      // RFC 8613 §13.6
	{11050, "application/json", "deflate"},                 // RFC 8428
	{11060, "application/cbor", "deflate"},                 // RFC 8428
}

// CoAPPayload is the media type of RFC 8075 §6.2 for a content format the
// proxy does not know.
const CoAPPayload = "application/coap-payload"

// OSCOREMediaType is the media type of an OSCORE payload (RFC 8613 §13.5).
const OSCOREMediaType = "application/oscore"

// mediaKey is a media type in the form lookups compare: lower-case type,
// then the parameters that tell content formats apart, sorted.
type mediaKey struct {
	typ      string
	param    string // "charset=utf-8", "cose-type=cose-sign1" or ""
	encoding string
}

var (
	byID  = map[uint16]contentFormat{}
	byKey = map[mediaKey]uint16{}
)

func init() {
	for _, f := range formats {
		byID[f.id] = f
		typ, params, err := mime.ParseMediaType(f.media)
		if err != nil {
			panic("http: bad built-in media type " + f.media) // a programming error in the table above
		}
		byKey[keyOf(typ, params, f.encoding)] = f.id
	}
}

func keyOf(typ string, params map[string]string, encoding string) mediaKey {
	k := mediaKey{typ: strings.ToLower(typ), encoding: strings.ToLower(encoding)}
	if encoding == "identity" {
		k.encoding = ""
	}
	switch {
	case k.typ == "text/plain":
		// text/plain without charset is US-ASCII (RFC 2046), a subset of
		// UTF-8, so both map to content format 0.
		if cs := strings.ToLower(params["charset"]); cs == "" || cs == "utf-8" || cs == "us-ascii" {
			k.param = "charset=utf-8"
		} else {
			k.param = "charset=" + cs
		}
	case k.typ == "application/cose":
		if t := strings.ToLower(params["cose-type"]); t != "" {
			k.param = "cose-type=" + t
		}
	}
	return k
}

// MediaType returns the HTTP media type and content coding of a CoAP
// content format; an unknown format gives application/coap-payload;cf=N
// with identity coding (RFC 8075 §6.2).
func MediaType(cf uint16) (media, encoding string) {
	if f, ok := byID[cf]; ok {
		return f.media, f.encoding
	}
	return CoAPPayload + ";cf=" + strconv.Itoa(int(cf)), ""
}

// ContentFormat maps an HTTP media type (a Content-Type value, parameters
// included) and content coding to a CoAP content format, with the
// algorithm of RFC 8075 §6.4. With loose set, the generalisations of
// Table 1 are tried when there is no exact match. application/coap-payload
// is mapped only when allowPayload is set. ok is false when nothing maps.
func ContentFormat(contentType, encoding string, loose, allowPayload bool) (cf uint16, ok bool) {
	typ, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, false
	}
	typ = strings.ToLower(typ)
	if typ == CoAPPayload {
		if !allowPayload || (encoding != "" && !strings.EqualFold(encoding, "identity")) {
			return 0, false
		}
		n, err := strconv.ParseUint(params["cf"], 10, 16)
		if err != nil {
			return 0, false
		}
		return uint16(n), true
	}
	if id, ok := byKey[keyOf(typ, params, encoding)]; ok {
		return id, true
	}
	if !loose {
		return 0, false
	}
	g := generalize(typ)
	gt, gp, _ := mime.ParseMediaType(g)
	id, ok := byKey[keyOf(gt, gp, encoding)]
	return id, ok
}

// generalize is RFC 8075 Table 1: the first matching row wins.
func generalize(typ string) string {
	switch {
	case strings.HasPrefix(typ, "application/") && strings.HasSuffix(typ, "+xml"):
		return "application/xml"
	case strings.HasPrefix(typ, "application/") && strings.HasSuffix(typ, "+json"):
		return "application/json"
	case strings.HasPrefix(typ, "application/") && strings.HasSuffix(typ, "+cbor"):
		return "application/cbor"
	case typ == "text/xml":
		return "application/xml"
	case strings.HasPrefix(typ, "text/"):
		return "text/plain"
	}
	return "application/octet-stream"
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
		if id, mapped := ContentFormat(mime.FormatMediaType(typ, params), "", false, allowPayload); mapped {
			best, cf, ok = q, id, true
		}
	}
	return cf, ok
}
