package coap

import "fmt"

// Code is a CoAP method or response code, class.detail in one byte (§3, §12.1).
type Code uint8

// NewCode builds class.detail.
func NewCode(class, detail uint8) Code { return Code(class<<5 | detail&0x1f) }

// Class and Detail split c.
func (c Code) Class() uint8  { return uint8(c) >> 5 }
func (c Code) Detail() uint8 { return uint8(c) & 0x1f }

// IsRequest reports a method code (0.01–0.31).
func (c Code) IsRequest() bool { return c.Class() == 0 && c != Empty }

// IsResponse reports a response code (classes 2–5).
func (c Code) IsResponse() bool { return c.Class() >= 2 && c.Class() <= 5 }

// IsSafe reports a method that does not change the resource (§5.1, RFC 8132 §2).
func (c Code) IsSafe() bool { return c == GET || c == FETCH }

// Codes gatewayd uses (RFC 7252 §12.1, RFC 8132, RFC 8516, RFC 8768, RFC 7959).
const (
	Empty  Code = 0
	GET    Code = 1
	POST   Code = 2
	PUT    Code = 3
	DELETE Code = 4
	FETCH  Code = 5
	PATCH  Code = 6
	IPATCH Code = 7

	Created                  Code = 2<<5 | 1
	Deleted                  Code = 2<<5 | 2
	Valid                    Code = 2<<5 | 3
	Changed                  Code = 2<<5 | 4
	Content                  Code = 2<<5 | 5
	Continue                 Code = 2<<5 | 31
	BadRequest               Code = 4<<5 | 0
	Unauthorized             Code = 4<<5 | 1
	BadOption                Code = 4<<5 | 2
	Forbidden                Code = 4<<5 | 3
	NotFound                 Code = 4<<5 | 4
	MethodNotAllowed         Code = 4<<5 | 5
	NotAcceptable            Code = 4<<5 | 6
	RequestEntityIncomplete  Code = 4<<5 | 8
	Conflict                 Code = 4<<5 | 9
	PreconditionFailed       Code = 4<<5 | 12
	RequestEntityTooLarge    Code = 4<<5 | 13
	UnsupportedContentFormat Code = 4<<5 | 15
	UnprocessableEntity      Code = 4<<5 | 22
	TooManyRequests          Code = 4<<5 | 29
	InternalServerError      Code = 5<<5 | 0
	NotImplemented           Code = 5<<5 | 1
	BadGateway               Code = 5<<5 | 2
	ServiceUnavailable       Code = 5<<5 | 3
	GatewayTimeout           Code = 5<<5 | 4
	ProxyingNotSupported     Code = 5<<5 | 5
	HopLimitReached          Code = 5<<5 | 8
)

var codeNames = map[Code]string{
	Empty: "Empty", GET: "GET", POST: "POST", PUT: "PUT", DELETE: "DELETE",
	FETCH: "FETCH", PATCH: "PATCH", IPATCH: "iPATCH",
	Created: "Created", Deleted: "Deleted", Valid: "Valid", Changed: "Changed",
	Content: "Content", Continue: "Continue", BadRequest: "BadRequest",
	Unauthorized: "Unauthorized", BadOption: "BadOption", Forbidden: "Forbidden",
	NotFound: "NotFound", MethodNotAllowed: "MethodNotAllowed",
	NotAcceptable: "NotAcceptable", RequestEntityIncomplete: "RequestEntityIncomplete",
	Conflict: "Conflict", PreconditionFailed: "PreconditionFailed",
	RequestEntityTooLarge:    "RequestEntityTooLarge",
	UnsupportedContentFormat: "UnsupportedContentFormat",
	UnprocessableEntity:      "UnprocessableEntity", TooManyRequests: "TooManyRequests",
	InternalServerError: "InternalServerError", NotImplemented: "NotImplemented",
	BadGateway: "BadGateway", ServiceUnavailable: "ServiceUnavailable",
	GatewayTimeout: "GatewayTimeout", ProxyingNotSupported: "ProxyingNotSupported",
	HopLimitReached: "HopLimitReached",
}

// String renders c as its name and dotted form, e.g. "Content(2.05)".
func (c Code) String() string {
	if c.Class() == 0 {
		if n, ok := codeNames[c]; ok {
			return n
		}
		return fmt.Sprintf("0.%02d", c.Detail())
	}
	if n, ok := codeNames[c]; ok {
		return fmt.Sprintf("%s(%d.%02d)", n, c.Class(), c.Detail())
	}
	return fmt.Sprintf("%d.%02d", c.Class(), c.Detail())
}
