package oscore

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/opaque-edge/gatewayd/coap"
)

// oscoreVersion is the oscore_version of the external AAD (§5.4).
const oscoreVersion = 1

// Exchange is the association §8 asks both endpoints to keep between a
// request and its responses: the security context, the request's 'kid' and
// Partial IV (bound into every response's AAD, §7.1) and the request's AEAD
// nonce. Keep it as long as responses may arrive or be sent: for an Observe
// registration, as long as the observation lasts. It is safe for concurrent
// use.
type Exchange struct {
	ctx     *Context
	server  bool
	kid     []byte // request 'kid': the client's Sender ID
	piv     []byte // request Partial IV
	nonce   [nonceLen]byte
	observe bool // the request registered an observation (Observe 0)

	mu sync.Mutex
	// guarded by mu:
	nonceUsed bool   // the request nonce protected (server) or verified (client) a response
	done      bool   // client: the final, non-notification response was verified
	hasNotif  bool   // client: notif is set
	notif     uint64 // client: the Notification Number (§4.1.3.5.2, §7.4.1)
}

// Context returns the security context of the exchange.
func (ex *Exchange) Context() *Context { return ex.ctx }

// Observe reports whether the request was an Observe registration.
func (ex *Exchange) Observe() bool { return ex.observe }

// RequestPIV returns a copy of the request's Partial IV.
func (ex *Exchange) RequestPIV() []byte { return bytes.Clone(ex.piv) }

// RequestKID returns a copy of the request's 'kid'.
func (ex *Exchange) RequestKID() []byte { return bytes.Clone(ex.kid) }

// externalAAD builds the AAD (§5.4): the Enc_structure of RFC 8152 §5.3,
// ["Encrypt0", empty bstr, external_aad], where external_aad is the
// bstr-wrapped aad_array [oscore_version, [alg_aead], request_kid,
// request_piv, options]. No Class I options are defined, so options is
// always the empty bstr.
func externalAAD(kid, piv []byte) ([]byte, error) {
	arr, err := cbor.Marshal([]any{oscoreVersion, []any{AlgAESCCM1664128}, bstr(kid), bstr(piv), []byte{}})
	if err != nil {
		return nil, fmt.Errorf("oscore: encode aad_array: %w", err)
	}
	enc, err := cbor.Marshal([]any{"Encrypt0", []byte{}, arr})
	if err != nil {
		return nil, fmt.Errorf("oscore: encode Enc_structure: %w", err)
	}
	return enc, nil
}

// bstr makes nil an empty byte string: the CBOR encoder writes a nil slice
// as null.
func bstr(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// plaintext encodes the §5.3 plaintext: the code, the inner options with
// deltas among themselves, then 0xff and the payload if there is one.
func plaintext(code coap.Code, inner coap.Options, payload []byte) ([]byte, error) {
	p := coap.Message{Code: code, Options: inner, Payload: payload}
	b, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMessage, err)
	}
	// Drop the 4-byte header but keep the code, moved next to the options.
	b[3] = b[1]
	b = b[3:]
	if len(b) > maxPlaintext {
		return nil, fmt.Errorf("%w: plaintext of %d bytes, at most %d", ErrMessage, len(b), maxPlaintext)
	}
	return b, nil
}

// parsePlaintext decodes a §5.3 plaintext.
func parsePlaintext(pt []byte) (*coap.Message, error) {
	if len(pt) == 0 {
		return nil, fmt.Errorf("%w: empty plaintext", ErrDecode)
	}
	b := make([]byte, 0, len(pt)+3)
	b = append(b, 1<<6, pt[0], 0, 0)
	b = append(b, pt[1:]...)
	var m coap.Message
	if err := m.Decode(b); err != nil {
		return nil, fmt.Errorf("%w: plaintext: %w", ErrDecode, err)
	}
	for _, o := range m.Options {
		if class(o.ID) == 'U' {
			// Outer-only options (and a nested OSCORE option, §4.1.3.7)
			// have no place in the plaintext.
			return nil, fmt.Errorf("%w: inner %v option", ErrDecode, o.ID)
		}
	}
	return &m, nil
}

// seal encrypts the plaintext and assembles the OSCORE message (§8.1 steps
// 4-5, §8.3 steps 4-5).
func (c *Context) seal(m *coap.Message, code coap.Code, outer coap.Options, pt []byte, nonce [nonceLen]byte, aad []byte, ov OptionValue) (*coap.Message, error) {
	val, err := ov.Append(nil)
	if err != nil {
		return nil, err
	}
	if val == nil {
		val = []byte{}
	}
	out := &coap.Message{
		Type:    m.Type,
		Code:    code,
		MID:     m.MID,
		Token:   m.Token,
		Options: outer.Insert(coap.OSCORE, val),
		Payload: c.sealer.Seal(nil, nonce[:], pt, aad),
	}
	return out.Clone(), nil
}

// ProtectRequest protects a CoAP request (§8.1) and returns the OSCORE
// request and the Exchange that verifies its responses. The outer code is
// POST, or FETCH when the request has an Observe option (§4.2, §4.1.3.5).
// req's options need not be sorted (repeats keep their order); req is not
// modified and the result shares no memory with it.
func (c *Context) ProtectRequest(req *coap.Message) (*coap.Message, *Exchange, error) {
	if !req.Code.IsRequest() {
		return nil, nil, fmt.Errorf("%w: %v is not a request code", ErrMessage, req.Code)
	}
	inner, outer, err := split(req, false)
	if err != nil {
		return nil, nil, err
	}
	pt, err := plaintext(req.Code, inner, req.Payload)
	if err != nil {
		return nil, nil, err
	}
	code := coap.POST
	obs, hasObs := req.Options.Uint(coap.Observe)
	if req.Options.Has(coap.Observe) {
		code = coap.FETCH
	}
	// Only now take a sequence number: a message that cannot be protected
	// must not burn one.
	seq, err := c.nextSeq()
	if err != nil {
		return nil, nil, err
	}
	piv := encodePIV(seq)
	aad, err := externalAAD(c.senderID, piv)
	if err != nil {
		return nil, nil, err
	}
	ex := &Exchange{
		ctx:     c,
		kid:     bstr(c.senderID),
		piv:     piv,
		nonce:   c.nonce(c.senderID, piv),
		observe: hasObs && obs == 0,
	}
	ov := OptionValue{PIV: piv, HasKID: true, KID: c.senderID}
	if c.sendKIDCtx {
		ov.HasKIDContext, ov.KIDContext = true, c.idContext
	}
	out, err := c.seal(req, code, outer, pt, ex.nonce, aad, ov)
	if err != nil {
		return nil, nil, err
	}
	return out, ex, nil
}

// oscoreOption returns the parsed OSCORE option and the ciphertext of a
// received message (§8.2 step 2, §8.4 step 2).
func oscoreOption(m *coap.Message) (OptionValue, error) {
	raw, ok := m.Options.Get(coap.OSCORE)
	if !ok {
		return OptionValue{}, ErrNotOSCORE
	}
	n := 0
	for range m.Options.All(coap.OSCORE) {
		n++
	}
	if n > 1 {
		return OptionValue{}, fmt.Errorf("%w: repeated OSCORE option", ErrDecode)
	}
	ov, err := ParseOptionValue(raw)
	if err != nil {
		return ov, err
	}
	if len(m.Payload) < tagLen+1 {
		// §2: an OSCORE message without payload is malformed; the
		// ciphertext holds at least the code and the tag.
		return ov, fmt.Errorf("%w: ciphertext of %d bytes", ErrDecode, len(m.Payload))
	}
	return ov, nil
}

// UnprotectRequest verifies and decrypts an OSCORE request (§8.2) and
// returns the original request and the Exchange to protect its responses
// with. The 'kid' must be this context's Recipient ID and a 'kid context',
// if present, its ID Context; use a Keyring to choose among contexts. The
// result shares no memory with m.
func (c *Context) UnprotectRequest(m *coap.Message) (*coap.Message, *Exchange, error) {
	ov, err := oscoreOption(m)
	if err != nil {
		return nil, nil, err
	}
	return c.unprotectRequest(m, ov)
}

func (c *Context) matches(ov OptionValue) bool {
	if !bytes.Equal(ov.KID, c.recipientID) {
		return false
	}
	// §5: with a 'kid context' the server SHALL use a context with that
	// ID Context.
	return !ov.HasKIDContext || c.idContext != nil && bytes.Equal(ov.KIDContext, c.idContext)
}

func (c *Context) unprotectRequest(m *coap.Message, ov OptionValue) (*coap.Message, *Exchange, error) {
	if len(ov.PIV) == 0 || !ov.HasKID {
		// §5: requests SHALL carry both.
		return nil, nil, fmt.Errorf("%w: request without Partial IV or kid", ErrDecode)
	}
	if !c.matches(ov) {
		return nil, nil, fmt.Errorf("%w: kid %x", ErrUnknownKID, ov.KID)
	}
	seq := decodePIV(ov.PIV)
	c.mu.Lock()
	fresh := c.window.fresh(seq)
	c.mu.Unlock()
	if !fresh {
		return nil, nil, fmt.Errorf("%w: request Partial IV %d", ErrReplay, seq)
	}
	aad, err := externalAAD(ov.KID, ov.PIV)
	if err != nil {
		return nil, nil, err
	}
	nonce := c.nonce(c.recipientID, ov.PIV)
	pt, err := c.opener.Open(nil, nonce[:], m.Payload, aad)
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	// Check again and record under one lock: a concurrent copy of the same
	// request may have been accepted meanwhile (§7.4: atomic).
	c.mu.Lock()
	fresh = c.window.fresh(seq)
	if fresh {
		c.window.accept(seq)
	}
	c.mu.Unlock()
	if !fresh {
		return nil, nil, fmt.Errorf("%w: request Partial IV %d", ErrReplay, seq)
	}
	inner, err := parsePlaintext(pt)
	if err != nil {
		return nil, nil, err
	}
	if !inner.Code.IsRequest() {
		return nil, nil, fmt.Errorf("%w: plaintext code %v in a request", ErrDecode, inner.Code)
	}
	obs, hasObs := inner.Options.Uint(coap.Observe)
	ex := &Exchange{
		ctx:     c,
		server:  true,
		kid:     bytes.Clone(bstr(ov.KID)),
		piv:     bytes.Clone(ov.PIV),
		nonce:   nonce,
		observe: hasObs && obs == 0,
	}
	return merge(m, inner), ex, nil
}

// merge builds the decrypted message: header fields and class U options
// from the OSCORE message, code, inner options and payload from the
// plaintext (§8.2 steps 1 and 7, §8.4 steps 1 and 6). Outer copies of class
// E and B options are discarded, and so is the OSCORE option.
func merge(m, inner *coap.Message) *coap.Message {
	out := &coap.Message{Type: m.Type, Code: inner.Code, MID: m.MID, Token: m.Token, Payload: inner.Payload}
	out.Options = make(coap.Options, 0, len(m.Options)+len(inner.Options))
	for _, o := range m.Options {
		if o.ID != coap.OSCORE && class(o.ID) == 'U' {
			out.Options = append(out.Options, o)
		}
	}
	for _, o := range inner.Options {
		out.Options = out.Options.Insert(o.ID, o.Value)
	}
	return out.Clone()
}

// ProtectResponse protects a response to the exchange's request (§8.3). The
// first response reuses the request's nonce and carries no Partial IV; later
// ones (notifications, §8.3.1) take a fresh Partial IV, so no nonce is used
// twice. A response with an Observe option is a notification: its outer
// code is 2.05 (Content) and its inner Observe empty (§4.1.3.5.2); other
// responses get 2.04 (Changed) (§4.2). resp is not modified.
func (ex *Exchange) ProtectResponse(resp *coap.Message) (*coap.Message, error) {
	return ex.protectResponse(resp, false)
}

// ProtectResponseWithPIV is ProtectResponse with a fresh Partial IV even for
// the first response (§8.3 step 3, second option; Appendix B.1.2).
func (ex *Exchange) ProtectResponseWithPIV(resp *coap.Message) (*coap.Message, error) {
	return ex.protectResponse(resp, true)
}

func (ex *Exchange) protectResponse(resp *coap.Message, withPIV bool) (*coap.Message, error) {
	if !ex.server {
		return nil, fmt.Errorf("%w: client exchange cannot protect a response", ErrMessage)
	}
	if !resp.Code.IsResponse() {
		return nil, fmt.Errorf("%w: %v is not a response code", ErrMessage, resp.Code)
	}
	notification := resp.Options.Has(coap.Observe)
	if notification && !ex.observe {
		return nil, fmt.Errorf("%w: Observe in a response to a request that did not register", ErrMessage)
	}
	inner, outer, err := split(resp, notification)
	if err != nil {
		return nil, err
	}
	pt, err := plaintext(resp.Code, inner, resp.Payload)
	if err != nil {
		return nil, err
	}
	code := coap.Changed
	if notification {
		code = coap.Content
	}
	c := ex.ctx
	aad, err := externalAAD(ex.kid, ex.piv)
	if err != nil {
		return nil, err
	}
	var ov OptionValue
	nonce := ex.nonce
	ex.mu.Lock()
	reuse := !withPIV && !ex.nonceUsed
	if reuse {
		ex.nonceUsed = true
	}
	ex.mu.Unlock()
	if !reuse {
		seq, err := c.nextSeq()
		if err != nil {
			return nil, err
		}
		ov.PIV = encodePIV(seq)
		nonce = c.nonce(c.senderID, ov.PIV)
	}
	return c.seal(resp, code, outer, pt, nonce, aad, ov)
}

// UnprotectResponse verifies and decrypts a response to the exchange's
// request (§8.4). A request gets one response; an Observe registration gets
// any number of notifications, each with a Partial IV greater than the last
// one (§7.4.1: this package takes the stricter option of discarding
// reordered notifications), at most one without, and one final response
// without Observe. Anything else is ErrReplay. In a verified notification
// the Observe value is the three low bytes of its Partial IV, and 0 without
// one, so that RFC 7641 ordering sees the order of §4.1.3.5.2. The result
// shares no memory with m.
func (ex *Exchange) UnprotectResponse(m *coap.Message) (*coap.Message, error) {
	if ex.server {
		return nil, fmt.Errorf("%w: server exchange cannot verify a response", ErrMessage)
	}
	ov, err := oscoreOption(m)
	if err != nil {
		return nil, err
	}
	c := ex.ctx
	if ov.HasKID && !bytes.Equal(ov.KID, c.recipientID) {
		return nil, fmt.Errorf("%w: response kid %x", ErrUnknownKID, ov.KID)
	}
	ex.mu.Lock()
	done := ex.done
	ex.mu.Unlock()
	if done {
		return nil, fmt.Errorf("%w: exchange already answered", ErrReplay)
	}
	nonce := ex.nonce
	if len(ov.PIV) > 0 {
		nonce = c.nonce(c.recipientID, ov.PIV)
	}
	aad, err := externalAAD(ex.kid, ex.piv)
	if err != nil {
		return nil, err
	}
	pt, err := c.opener.Open(nil, nonce[:], m.Payload, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	inner, err := parsePlaintext(pt)
	if err != nil {
		return nil, err
	}
	if !inner.Code.IsResponse() {
		return nil, fmt.Errorf("%w: plaintext code %v in a response", ErrDecode, inner.Code)
	}
	notification := inner.Options.Has(coap.Observe)
	if notification && !ex.observe {
		return nil, ErrUnexpectedObserve // §4.1.3.5.2
	}
	if err := ex.record(ov.PIV, notification); err != nil {
		return nil, err
	}
	if notification {
		var seq uint64
		if len(ov.PIV) > 0 {
			seq = decodePIV(ov.PIV)
		}
		inner.Options = inner.Options.SetUint(coap.Observe, uint32(seq&0xffffff))
	}
	return merge(m, inner), nil
}

// record updates the exchange after a verified response (§7.4, §7.4.1,
// §8.4.2), or reports it as a replay.
func (ex *Exchange) record(piv []byte, notification bool) error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.done {
		return fmt.Errorf("%w: exchange already answered", ErrReplay)
	}
	switch {
	case len(piv) == 0:
		if ex.nonceUsed {
			return fmt.Errorf("%w: second response without Partial IV", ErrReplay)
		}
		ex.nonceUsed = true
	case notification:
		seq := decodePIV(piv)
		if ex.hasNotif && seq <= ex.notif {
			return fmt.Errorf("%w: notification Partial IV %d, last %d", ErrReplay, seq, ex.notif)
		}
		ex.notif, ex.hasNotif = seq, true
	}
	if !notification {
		ex.done = true
	}
	return nil
}
