package http

import (
	nethttp "net/http"

	"github.com/opaque-edge/gatewayd/coap"
)

// statusOf maps a CoAP response code to an HTTP status code (RFC 8075 §7,
// Table 2). withPayload selects 200 or 204 for 2.02 and 2.04 (note 2);
// conditional says the HTTP request was a validation, so 2.03 is 304
// (note 3); headerOption says the CoAP request carried options mapped
// from client header fields, so 4.02 blames the client (note 6).
func statusOf(c coap.Code, withPayload, conditional, headerOption bool) int {
	switch c {
	case coap.Created:
		return nethttp.StatusCreated
	case coap.Deleted, coap.Changed:
		if withPayload {
			return nethttp.StatusOK
		}
		return nethttp.StatusNoContent
	case coap.Valid:
		if conditional {
			return nethttp.StatusNotModified
		}
		// Note 4: 200 needs a local cache to revalidate; without one a
		// 2.03 to an unconditional request is not understood.
		return nethttp.StatusBadGateway
	case coap.Content:
		return nethttp.StatusOK
	case coap.Continue, coap.RequestEntityIncomplete:
		// Note 10: block-wise only, never an HTTP response.
		return nethttp.StatusBadGateway
	case coap.BadRequest:
		return nethttp.StatusBadRequest
	case coap.Unauthorized:
		return nethttp.StatusForbidden // note 5: no WWW-Authenticate in CoAP
	case coap.BadOption:
		if headerOption {
			return nethttp.StatusBadRequest
		}
		return nethttp.StatusInternalServerError
	case coap.Forbidden:
		return nethttp.StatusForbidden
	case coap.NotFound:
		return nethttp.StatusNotFound
	case coap.MethodNotAllowed:
		return nethttp.StatusBadRequest // note 7: no Allow to give
	case coap.NotAcceptable:
		return nethttp.StatusNotAcceptable
	case coap.Conflict:
		return nethttp.StatusConflict // RFC 9177
	case coap.PreconditionFailed:
		return nethttp.StatusPreconditionFailed
	case coap.RequestEntityTooLarge:
		return nethttp.StatusRequestEntityTooLarge
	case coap.UnsupportedContentFormat:
		return nethttp.StatusUnsupportedMediaType
	case coap.UnprocessableEntity:
		return nethttp.StatusUnprocessableEntity // RFC 8132
	case coap.TooManyRequests:
		return nethttp.StatusTooManyRequests // RFC 8516
	case coap.InternalServerError:
		return nethttp.StatusInternalServerError
	case coap.NotImplemented:
		return nethttp.StatusNotImplemented
	case coap.BadGateway, coap.ProxyingNotSupported:
		return nethttp.StatusBadGateway // 5.05: note 9
	case coap.ServiceUnavailable:
		return nethttp.StatusServiceUnavailable
	case coap.GatewayTimeout:
		return nethttp.StatusGatewayTimeout
	case coap.HopLimitReached:
		return nethttp.StatusLoopDetected // RFC 8768: a forwarding loop
	}
	switch c.Class() {
	case 2:
		return nethttp.StatusOK
	case 4:
		return nethttp.StatusBadRequest
	case 5:
		return nethttp.StatusInternalServerError
	}
	return nethttp.StatusBadGateway
}

// codeOf maps an HTTP status to a CoAP response code for a request with
// method m (RFC 7252 §10.1). ok is false for statuses CoAP cannot express
// (1xx, 3xx other than 304): the caller answers 5.02.
func codeOf(status int, m coap.Code, conditional bool) (c coap.Code, ok bool) {
	switch {
	case status == nethttp.StatusNotModified && conditional:
		return coap.Valid, true
	case status >= 200 && status < 300:
		switch {
		case m == coap.DELETE:
			return coap.Deleted, true
		case status == nethttp.StatusCreated && (m == coap.POST || m == coap.PUT):
			return coap.Created, true
		case m == coap.GET || m == coap.FETCH:
			return coap.Content, true
		}
		return coap.Changed, true
	case status == nethttp.StatusNotFound && m == coap.DELETE:
		// §10.1.3: deleting what does not exist is a success.
		return coap.Deleted, true
	}
	switch status {
	case nethttp.StatusBadRequest:
		return coap.BadRequest, true
	case nethttp.StatusUnauthorized:
		return coap.Unauthorized, true
	case nethttp.StatusForbidden:
		return coap.Forbidden, true
	case nethttp.StatusNotFound, nethttp.StatusGone:
		return coap.NotFound, true
	case nethttp.StatusMethodNotAllowed:
		return coap.MethodNotAllowed, true
	case nethttp.StatusNotAcceptable:
		return coap.NotAcceptable, true
	case nethttp.StatusConflict:
		return coap.Conflict, true
	case nethttp.StatusPreconditionFailed:
		return coap.PreconditionFailed, true
	case nethttp.StatusRequestEntityTooLarge:
		return coap.RequestEntityTooLarge, true
	case nethttp.StatusUnsupportedMediaType:
		return coap.UnsupportedContentFormat, true
	case nethttp.StatusUnprocessableEntity:
		return coap.UnprocessableEntity, true
	case nethttp.StatusTooManyRequests:
		return coap.TooManyRequests, true
	case nethttp.StatusNotImplemented:
		return coap.NotImplemented, true
	case nethttp.StatusBadGateway:
		return coap.BadGateway, true
	case nethttp.StatusServiceUnavailable:
		return coap.ServiceUnavailable, true
	case nethttp.StatusGatewayTimeout:
		return coap.GatewayTimeout, true
	case nethttp.StatusLoopDetected:
		return coap.HopLimitReached, true
	}
	switch {
	case status >= 400 && status < 500:
		return coap.BadRequest, true
	case status >= 500 && status < 600:
		return coap.InternalServerError, true
	}
	return 0, false
}
