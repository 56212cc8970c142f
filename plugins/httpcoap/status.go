package httpcoap

import (
	"net/http"

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
		return http.StatusCreated
	case coap.Deleted, coap.Changed:
		if withPayload {
			return http.StatusOK
		}
		return http.StatusNoContent
	case coap.Valid:
		if conditional {
			return http.StatusNotModified
		}
		// Note 4: 200 needs a local cache to revalidate; without one a
		// 2.03 to an unconditional request is not understood.
		return http.StatusBadGateway
	case coap.Content:
		return http.StatusOK
	case coap.Continue, coap.RequestEntityIncomplete:
		// Note 10: block-wise only, never an HTTP response.
		return http.StatusBadGateway
	case coap.BadRequest:
		return http.StatusBadRequest
	case coap.Unauthorized:
		return http.StatusForbidden // note 5: no WWW-Authenticate in CoAP
	case coap.BadOption:
		if headerOption {
			return http.StatusBadRequest
		}
		return http.StatusInternalServerError
	case coap.Forbidden:
		return http.StatusForbidden
	case coap.NotFound:
		return http.StatusNotFound
	case coap.MethodNotAllowed:
		return http.StatusBadRequest // note 7: no Allow to give
	case coap.NotAcceptable:
		return http.StatusNotAcceptable
	case coap.Conflict:
		return http.StatusConflict // RFC 9177
	case coap.PreconditionFailed:
		return http.StatusPreconditionFailed
	case coap.RequestEntityTooLarge:
		return http.StatusRequestEntityTooLarge
	case coap.UnsupportedContentFormat:
		return http.StatusUnsupportedMediaType
	case coap.UnprocessableEntity:
		return http.StatusUnprocessableEntity // RFC 8132
	case coap.TooManyRequests:
		return http.StatusTooManyRequests // RFC 8516
	case coap.InternalServerError:
		return http.StatusInternalServerError
	case coap.NotImplemented:
		return http.StatusNotImplemented
	case coap.BadGateway, coap.ProxyingNotSupported:
		return http.StatusBadGateway // 5.05: note 9
	case coap.ServiceUnavailable:
		return http.StatusServiceUnavailable
	case coap.GatewayTimeout:
		return http.StatusGatewayTimeout
	case coap.HopLimitReached:
		return http.StatusLoopDetected // RFC 8768: a forwarding loop
	}
	switch c.Class() {
	case 2:
		return http.StatusOK
	case 4:
		return http.StatusBadRequest
	case 5:
		return http.StatusInternalServerError
	}
	return http.StatusBadGateway
}

// codeOf maps an HTTP status to a CoAP response code for a request with
// method m (RFC 7252 §10.1). ok is false for statuses CoAP cannot express
// (1xx, 3xx other than 304): the caller answers 5.02.
func codeOf(status int, m coap.Code, conditional bool) (c coap.Code, ok bool) {
	switch {
	case status == http.StatusNotModified && conditional:
		return coap.Valid, true
	case status >= 200 && status < 300:
		switch {
		case m == coap.DELETE:
			return coap.Deleted, true
		case status == http.StatusCreated && (m == coap.POST || m == coap.PUT):
			return coap.Created, true
		case m == coap.GET || m == coap.FETCH:
			return coap.Content, true
		}
		return coap.Changed, true
	case status == http.StatusNotFound && m == coap.DELETE:
		// §10.1.3: deleting what does not exist is a success.
		return coap.Deleted, true
	}
	switch status {
	case http.StatusBadRequest:
		return coap.BadRequest, true
	case http.StatusUnauthorized:
		return coap.Unauthorized, true
	case http.StatusForbidden:
		return coap.Forbidden, true
	case http.StatusNotFound, http.StatusGone:
		return coap.NotFound, true
	case http.StatusMethodNotAllowed:
		return coap.MethodNotAllowed, true
	case http.StatusNotAcceptable:
		return coap.NotAcceptable, true
	case http.StatusConflict:
		return coap.Conflict, true
	case http.StatusPreconditionFailed:
		return coap.PreconditionFailed, true
	case http.StatusRequestEntityTooLarge:
		return coap.RequestEntityTooLarge, true
	case http.StatusUnsupportedMediaType:
		return coap.UnsupportedContentFormat, true
	case http.StatusUnprocessableEntity:
		return coap.UnprocessableEntity, true
	case http.StatusTooManyRequests:
		return coap.TooManyRequests, true
	case http.StatusNotImplemented:
		return coap.NotImplemented, true
	case http.StatusBadGateway:
		return coap.BadGateway, true
	case http.StatusServiceUnavailable:
		return coap.ServiceUnavailable, true
	case http.StatusGatewayTimeout:
		return coap.GatewayTimeout, true
	case http.StatusLoopDetected:
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
