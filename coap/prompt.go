package coap

import "errors"

// ErrSeparate is returned by WritePrompt when the response would go as a
// separate response: the CON request was acknowledged with an empty ACK
// before the answer came (§5.2.2).
var ErrSeparate = errors.New("coap: the answer would be a separate response")

// PromptWriter is a ResponseWriter that can send a response only if it
// goes at once as the answer: piggybacked in the ACK of a CON request, or
// as a NON. A separate response is a CON, retransmitted until
// acknowledged; to an address nobody has verified that multiplies what an
// attacker who forged the address gets sent there, and RFC 9175 §2.4 item
// 3 forbids it for an Echo challenge. The endpoint's writers are
// PromptWriters.
type PromptWriter interface {
	ResponseWriter
	// WritePrompt is WriteResponse, except that it sends nothing and
	// returns ErrSeparate when the answer would be a separate response.
	// The request is then still unanswered.
	WritePrompt(resp *Message) error
}

// WritePrompt writes resp through w only if it goes at once: by
// WritePrompt when w is a PromptWriter, else by WriteResponse, since a
// writer that is not one never makes a separate response.
func WritePrompt(w ResponseWriter, resp *Message) error {
	if p, ok := w.(PromptWriter); ok {
		return p.WritePrompt(resp)
	}
	return w.WriteResponse(resp)
}

var _ PromptWriter = (*responseWriter)(nil)

func (w *responseWriter) WritePrompt(resp *Message) error {
	return w.writeAs(resp, true, true)
}
