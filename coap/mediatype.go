package coap

import (
	"mime"
	"strconv"
	"strings"
)

// contentFormat is one row of the CoAP Content-Formats registry (RFC 7252
// §12.3 and later registrations) that MediaType and ContentFormatOf map.
type contentFormat struct {
	id       uint16
	media    string // media type with parameters, canonical form
	encoding string // HTTP content coding; "" is identity
}

// contentFormats holds only registrations whose numbers were checked
// against the registering documents; a number not listed here travels as
// application/coap-payload;cf=N (RFC 8075 §6.2).
var contentFormats = []contentFormat{
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

// PayloadMediaType is the media type of RFC 8075 §6.2 for a content
// format that has no media type of its own here:
// application/coap-payload;cf=N.
const PayloadMediaType = "application/coap-payload"

// mediaKey is a media type in the form lookups compare: lower-case type,
// then the parameters that tell content formats apart, sorted.
type mediaKey struct {
	typ      string
	param    string // "charset=utf-8", "cose-type=cose-sign1" or ""
	encoding string
}

var (
	formatByID  = map[uint16]contentFormat{}
	formatByKey = map[mediaKey]uint16{}
)

func init() {
	for _, f := range contentFormats {
		formatByID[f.id] = f
		typ, params, err := mime.ParseMediaType(f.media)
		if err != nil {
			panic("coap: bad built-in media type " + f.media) // a programming error in the table above
		}
		formatByKey[keyOf(typ, params, f.encoding)] = f.id
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

// MediaType returns the media type and content coding (HTTP's
// Content-Type and Content-Encoding, MQTT's content type) of a CoAP
// content format; an unknown format gives application/coap-payload;cf=N
// with identity coding (RFC 8075 §6.2).
func MediaType(cf uint16) (media, encoding string) {
	if f, ok := formatByID[cf]; ok {
		return f.media, f.encoding
	}
	return PayloadMediaType + ";cf=" + strconv.Itoa(int(cf)), ""
}

// MediaMatch widens what ContentFormatOf maps.
type MediaMatch uint8

const (
	// Generalize tries the generalisations of RFC 8075 Table 1
	// (application/*+json as application/json, text/* as text/plain, ...)
	// when nothing matches exactly.
	Generalize MediaMatch = 1 << iota
	// AllowPayloadType maps application/coap-payload;cf=N to N.
	AllowPayloadType
)

// ContentFormatOf maps a media type (a Content-Type value, parameters
// included) and content coding to a CoAP content format, with the
// algorithm of RFC 8075 §6.4; m widens the match. ok is false when
// nothing maps.
func ContentFormatOf(contentType, encoding string, m MediaMatch) (cf uint16, ok bool) {
	typ, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, false
	}
	typ = strings.ToLower(typ)
	if typ == PayloadMediaType {
		if m&AllowPayloadType == 0 || (encoding != "" && !strings.EqualFold(encoding, "identity")) {
			return 0, false
		}
		n, err := strconv.ParseUint(params["cf"], 10, 16)
		if err != nil {
			return 0, false
		}
		return uint16(n), true
	}
	if id, ok := formatByKey[keyOf(typ, params, encoding)]; ok {
		return id, true
	}
	if m&Generalize == 0 {
		return 0, false
	}
	gt, gp, _ := mime.ParseMediaType(generalize(typ))
	id, ok := formatByKey[keyOf(gt, gp, encoding)]
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
