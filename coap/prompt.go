package coap

var _ PromptWriter = (*responseWriter)(nil)

func (w *responseWriter) WritePrompt(resp *Message) error {
	return w.writeAs(resp, true, true)
}
