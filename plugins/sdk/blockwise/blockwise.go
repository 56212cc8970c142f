// Package blockwise is the client side of CoAP block-wise transfers (RFC
// 7959) for whatever carries representations across gatewayd's plugin
// boundary: it sends a request body that does not fit one block with
// Block1 (§2.5), fetches the rest of a response or notification that came
// with Block2 and the M bit (§2.4, §2.6), checks that every block belongs
// to the same representation, and bounds the whole by a maximum. A body
// is always passed on whole or not at all: never a prefix as if it were
// the whole.
//
// The Client works over any RoundTripFunc: gatewayd's plugin host runs it
// on its request chain for Host.Do and Host.Observe, and a plugin author
// can run it on a CoAP client of their own.
package blockwise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/opaque-edge/gatewayd/coap"
)

// RoundTripFunc sends one request and returns its response.
type RoundTripFunc func(ctx context.Context, req *coap.Message) (*coap.Message, error)

// Defaults and bounds of Client.
const (
	DefaultMaxBody   = 1 << 20 // bytes of a whole body, either way
	DefaultBlockSize = 1024    // the largest block RFC 7959 §2.2 has (SZX 6)
	MinBlockSize     = 16      // SZX 0
	// MaxAttempts bounds the fetches of a representation that changed
	// while its blocks were fetched (§2.4), and the restarts of a Block1
	// transfer the server asked to make with smaller blocks (§2.5).
	MaxAttempts = 3
)

// ErrTooLarge is what a *TooLargeError is.
var ErrTooLarge = errors.New("blockwise: body over the maximum")

// ErrBlockwise is wrapped by errors about a transfer that cannot be
// completed: a peer broke RFC 7959 (a block out of place, of the wrong
// size), or the representation changed under every attempt to fetch it.
var ErrBlockwise = errors.New("blockwise: transfer failed")

// TooLargeError reports a body over the Client's MaxBody: a request body
// (Request) or a response's representation. Size is the body's size as
// far as it is known: the request's length, the server's Size2 (§4), or
// else the bytes received before the transfer was abandoned, which
// already exceed Max.
type TooLargeError struct {
	Size    int64
	Max     int64
	Request bool
}

func (e *TooLargeError) Error() string {
	what := "representation"
	if e.Request {
		what = "request body"
	}
	return fmt.Sprintf("blockwise: %s of %d bytes over the maximum of %d", what, e.Size, e.Max)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Block is the value of a Block1 or Block2 option (§2.2).
type Block struct {
	Num  uint32 // block number, 20 bits
	More bool   // M: more blocks follow (descriptive usage)
	SZX  uint8  // size exponent: the block size is 2**(SZX+4)
}

// maxNum is the largest NUM a 3-byte option holds.
const maxNum = 1<<20 - 1

// Size is the block size in bytes.
func (b Block) Size() int { return 1 << (b.SZX + 4) }

// Offset is the position in the body of the block's first byte.
func (b Block) Offset() int64 { return int64(b.Num) << (b.SZX + 4) }

// Value is the option value, encoded as a uint (§2.2, RFC 7252 §3.2).
func (b Block) Value() []byte {
	v := b.Num<<4 | uint32(b.SZX&7)
	if b.More {
		v |= 8
	}
	return coap.EncodeUint(v)
}

// ParseBlock reads a Block1 or Block2 option value. SZX 7 is reserved
// (§2.2) and an error, as is a value over 3 bytes.
func ParseBlock(v []byte) (Block, error) {
	if len(v) > 3 {
		return Block{}, fmt.Errorf("%w: block option of %d bytes", ErrBlockwise, len(v))
	}
	u := coap.DecodeUint(v)
	b := Block{Num: u >> 4, More: u&8 != 0, SZX: uint8(u & 7)}
	if b.SZX == 7 {
		return Block{}, fmt.Errorf("%w: reserved SZX 7", ErrBlockwise)
	}
	return b, nil
}

// Get returns the Block option id of opts; ok is false when there is none.
func Get(opts coap.Options, id coap.OptionID) (b Block, ok bool, err error) {
	v, ok := opts.Get(id)
	if !ok {
		return Block{}, false, nil
	}
	b, err = ParseBlock(v)
	return b, err == nil, err
}

// szxOf returns the SZX of a block size, rounded down to a power of two
// between 16 and 1024.
func szxOf(size int) uint8 {
	var s uint8
	for s < 6 && 1<<(s+5) <= size {
		s++
	}
	return s
}

// Client runs whole-body exchanges over RoundTrip. The zero value of each
// field but RoundTrip means its default. A Client is safe for concurrent
// use; it keeps no state between calls.
type Client struct {
	RoundTrip RoundTripFunc
	// MaxBody bounds a body either way, in bytes: a longer request body
	// is not sent, a longer representation not assembled (TooLargeError).
	// Default DefaultMaxBody.
	MaxBody int
	// BlockSize is the largest block sent or asked for: 16 to 1024, a
	// power of two (other values round down). Default 1024. A body of at
	// most one block goes in one message.
	BlockSize int
}

func (c *Client) maxBody() int64 {
	if c.MaxBody <= 0 {
		return DefaultMaxBody
	}
	return int64(c.MaxBody)
}

func (c *Client) szx() uint8 {
	if c.BlockSize <= 0 {
		return 6
	}
	return szxOf(c.BlockSize)
}

// Transferring reports whether req is itself part of a block-wise transfer
// that its sender runs (it carries Block1 or Block2): Do passes such a
// request on as it is.
func Transferring(req *coap.Message) bool {
	return req.Options.Has(coap.Block1) || req.Options.Has(coap.Block2)
}

// Do sends req and returns the whole response. A body longer than the
// block size goes in Block1 blocks (§2.5), with a Request-Tag of its own
// (RFC 9175 §3) so that concurrent transfers to one resource cannot mix,
// and Size1 with the first block (§4); a response with Block2 and the M
// bit is completed with Complete. A request that already carries Block1
// or Block2 is its sender's own transfer and goes out once, untouched.
//
// A response that is not 2.xx is returned as the answer, whichever block
// it came to; the body of a completed response is the whole
// representation, with Block2 and Size2 removed. Errors: *TooLargeError,
// ErrBlockwise, or RoundTrip's.
func (c *Client) Do(ctx context.Context, req *coap.Message) (*coap.Message, error) {
	if Transferring(req) {
		return c.RoundTrip(ctx, req)
	}
	if n := int64(len(req.Payload)); n > c.maxBody() {
		return nil, &TooLargeError{Size: n, Max: c.maxBody(), Request: true}
	}
	szx := c.szx()
	if len(req.Payload) > 1<<(szx+4) {
		return c.send(ctx, req, szx)
	}
	resp, err := c.RoundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Code == coap.RequestEntityTooLarge && len(req.Payload) > MinBlockSize {
		// A 4.13 to a request without Block1 is a hint to send it in
		// blocks (§2.9.3; RFC 8075 §8.3 asks an HC proxy to retry so),
		// of the size its Block1 suggests, or smaller than the body. A
		// server that cannot take the body at all says so again, and
		// that answer stands.
		small := szxOf(len(req.Payload) - 1)
		if b, ok, _ := Get(resp.Options, coap.Block1); ok && b.SZX < small {
			small = b.SZX
		}
		return c.send(ctx, req, small)
	}
	return c.complete(ctx, req, resp, nil)
}

// Complete returns the whole representation of which first, a response to
// req or a notification for it (RFC 7641), carries the first block (§2.4,
// §2.6: a notification carries block 0, the rest is fetched with GET and
// Block2, without Observe). Every block must carry first's ETag, or none
// when first has none; when one does not, the representation changed
// while it was fetched, and it is fetched again from block 0 with a new
// Request-Tag, which no cache on the way has seen (RFC 9175 §3.3), up to
// MaxAttempts in all. The result is first with the whole body, without
// Block2 and Size2; when a later attempt succeeded, the block 0 of that
// attempt with first's Observe option. A first response without Block2,
// or whose M bit is clear, is returned as it is.
func (c *Client) Complete(ctx context.Context, req, first *coap.Message) (*coap.Message, error) {
	return c.complete(ctx, req, first, nil)
}

// complete is Complete for a transfer whose Block1 phase carried tag (its
// Request-Tag, RFC 9175 §3.4); nil when there was none.
func (c *Client) complete(ctx context.Context, req, first *coap.Message, tag []byte) (*coap.Message, error) {
	b, ok, err := Get(first.Options, coap.Block2)
	if err != nil {
		return nil, err
	}
	if !ok || !b.More || first.Code.Class() != 2 {
		return first, nil
	}
	if b.Num != 0 {
		return nil, fmt.Errorf("%w: the first response carries block %d", ErrBlockwise, b.Num)
	}
	// Only a safe request's response can be fetched again from block 0;
	// an unsafe one's exists once, and a changed block ends it.
	again := req.Code.IsSafe() && tag == nil
	follow := followUp(req, tag, tag == nil)
	head := first
	for attempt := 1; ; attempt++ {
		whole, err := c.collect(ctx, follow, head)
		if !errors.Is(err, errChanged) {
			if err != nil || whole.Code.Class() != 2 {
				return whole, err
			}
			if v, ok := first.Options.Get(coap.Observe); ok && head != first {
				whole.Options = whole.Options.Set(coap.Observe, v)
			}
			whole.Token, whole.MID, whole.Type = first.Token, first.MID, first.Type
			return whole, nil
		}
		if !again || attempt == MaxAttempts {
			return nil, fmt.Errorf("%w: the representation changed during each of %d attempts", ErrBlockwise, attempt)
		}
		// Fetch block 0 again, under a Request-Tag that makes it (and
		// what follows) a new operation: no cache on the path holds a
		// response to it, so the blocks come from the origin, now.
		follow = followUp(req, newTag(), true)
		follow.Options = follow.Options.Set(coap.Block2, Block{SZX: min(b.SZX, c.szx())}.Value())
		head, err = c.RoundTrip(ctx, follow)
		if err != nil {
			return nil, err
		}
		if _, ok, err := Get(head.Options, coap.Block2); err != nil {
			return nil, err
		} else if !ok || head.Code.Class() != 2 {
			// The whole of it in one response, or an error: the answer.
			return head, nil
		}
		follow.Options = follow.Options.Remove(coap.Block2)
	}
}

// errChanged is collect's report that a block belongs to another
// representation than block 0.
var errChanged = errors.New("blockwise: representation changed")

// collect fetches the blocks after head (block 0, 2.xx, with Block2) with
// follow and returns head with the whole body, or the first response that
// is not 2.xx.
func (c *Client) collect(ctx context.Context, follow, head *coap.Message) (*coap.Message, error) {
	b, _, _ := Get(head.Options, coap.Block2)
	if b.Num != 0 {
		return nil, fmt.Errorf("%w: block 0 asked, block %d came", ErrBlockwise, b.Num)
	}
	max := c.maxBody()
	if s, ok := head.Options.Uint(coap.Size2); ok && int64(s) > max {
		// §4: the server's estimate of the whole; no use fetching more.
		return nil, &TooLargeError{Size: int64(s), Max: max}
	}
	if err := checkPayload(b, head.Payload); err != nil {
		return nil, err
	}
	etag, hasETag := head.Options.Get(coap.ETag)
	cf, hasCF := head.Options.Get(coap.ContentFormat)
	body := make([]byte, 0, min(max, int64(16*b.Size())))
	body = append(body, head.Payload...)
	for b.More {
		if int64(len(body)) > max {
			return nil, &TooLargeError{Size: int64(len(body)), Max: max}
		}
		// §2.3: later requests use the server's block size, or a smaller
		// one (late negotiation), numbered from the bytes received.
		szx := min(b.SZX, c.szx())
		off := int64(len(body))
		want := Block{Num: uint32(off >> (szx + 4)), SZX: szx}
		if off>>(szx+4) > maxNum {
			return nil, fmt.Errorf("%w: block number over 20 bits", ErrBlockwise)
		}
		req := follow.Clone()
		req.Options = req.Options.Set(coap.Block2, want.Value())
		resp, err := c.RoundTrip(ctx, req)
		if err != nil {
			return nil, err
		}
		if resp.Code.Class() != 2 {
			return resp, nil
		}
		rb, ok, err := Get(resp.Options, coap.Block2)
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, fmt.Errorf("%w: block %d came without Block2", ErrBlockwise, want.Num)
		case rb.Offset() != off || rb.SZX > szx:
			return nil, fmt.Errorf("%w: asked for %d bytes at %d, got block %d of %d bytes", ErrBlockwise, want.Size(), off, rb.Num, rb.Size())
		}
		// §2.4: blocks of one representation share its ETag. Another
		// ETag, or another Content-Format (§2.3), is another
		// representation: never spliced onto this one.
		if t, ok := resp.Options.Get(coap.ETag); ok != hasETag || !bytes.Equal(t, etag) {
			return nil, errChanged
		}
		if f, ok := resp.Options.Get(coap.ContentFormat); ok != hasCF || !bytes.Equal(f, cf) {
			return nil, errChanged
		}
		if err := checkPayload(rb, resp.Payload); err != nil {
			return nil, err
		}
		body = append(body, resp.Payload...)
		b = rb
	}
	if int64(len(body)) > max {
		return nil, &TooLargeError{Size: int64(len(body)), Max: max}
	}
	whole := head.Clone()
	whole.Options = whole.Options.Remove(coap.Block2).Remove(coap.Size2)
	whole.Payload = body
	return whole, nil
}

// checkPayload applies §2.3: a block with the M bit is exactly the block
// size; the last one at most that.
func checkPayload(b Block, p []byte) error {
	if b.More && len(p) != b.Size() || len(p) > b.Size() {
		return fmt.Errorf("%w: block %d (size %d, more %t) has %d bytes", ErrBlockwise, b.Num, b.Size(), b.More, len(p))
	}
	return nil
}

// followUp is the request that asks for further blocks of req's response
// (§2.4): req's options without Observe (§2.6), Block1, Size1, Block2 and
// Size2, with tag as its Request-Tag when there is one. A GET or FETCH
// keeps its payload when withBody (a FETCH body is part of the request,
// RFC 8132 §2); other methods, and a body sent in Block1 blocks, ask
// without one, the body being delivered already (§2.7, Figure 10).
func followUp(req *coap.Message, tag []byte, withBody bool) *coap.Message {
	var f *coap.Message
	if withBody && req.Code.IsSafe() {
		f = req.Clone()
	} else {
		f = bodiless(req)
	}
	f.Options = f.Options.Remove(coap.Observe).Remove(coap.Block1).Remove(coap.Size1).Remove(coap.Block2).Remove(coap.Size2)
	if tag != nil {
		f.Options = f.Options.Remove(coap.RequestTag).Insert(coap.RequestTag, tag)
	}
	return f
}

// bodiless is a copy of req without its payload, which is not copied.
func bodiless(req *coap.Message) *coap.Message {
	m := *req
	m.Payload = nil
	return m.Clone()
}

// newTag is a Request-Tag for one operation (RFC 9175 §3.4): random, so
// that no two operations that may overlap share one, and short (§3.4:
// compact messages).
func newTag() []byte {
	v := rand.Uint32()
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// send transfers req's body in Block1 blocks of 2**(szx+4) bytes (§2.5)
// and completes the final response's Block2 transfer (§2.7).
func (c *Client) send(ctx context.Context, req *coap.Message, szx uint8) (*coap.Message, error) {
	body := req.Payload
	tag := newTag()
	restarts := 0
	for off := 0; ; {
		size := 1 << (szx + 4)
		end := min(off+size, len(body))
		sent := Block{Num: uint32(off >> (szx + 4)), More: end < len(body), SZX: szx}
		if sent.Num > maxNum {
			return nil, fmt.Errorf("%w: block number over 20 bits", ErrBlockwise)
		}
		m := bodiless(req)
		m.Options = m.Options.Remove(coap.Block1).Remove(coap.Block2).Remove(coap.Size1).Remove(coap.RequestTag).
			Insert(coap.Block1, sent.Value()).Insert(coap.RequestTag, tag)
		if off == 0 {
			// §4: the size of the whole, with the first block.
			m.Options = m.Options.SetUint(coap.Size1, uint32(len(body)))
		} else {
			// §2.10: If-None-Match only on block 0.
			m.Options = m.Options.Remove(coap.IfNoneMatch)
		}
		m.Payload = body[off:end]
		resp, err := c.RoundTrip(ctx, m)
		if err != nil {
			return nil, err
		}
		rb, hasB1, err := Get(resp.Options, coap.Block1)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.Code == coap.BadOption && off == 0 && restarts == 0:
			// RFC 8075 §8.3: a server without block-wise support rejects
			// the critical Block1 (4.02); the body goes whole instead.
			whole := req.Clone()
			resp, err := c.RoundTrip(ctx, whole)
			if err != nil {
				return nil, err
			}
			return c.complete(ctx, whole, resp, nil)
		case resp.Code == coap.RequestEntityTooLarge && hasB1 && rb.SZX < szx && restarts < MaxAttempts-1:
			// §2.9.3: a smaller SZX in a 4.13 is a hint to try that
			// size; the transfer starts over, as a new operation.
			szx, off, tag = rb.SZX, 0, newTag()
			restarts++
			continue
		case !sent.More:
			// The final response; Block2 continues with the Request-Tag
			// of the Block1 phase (RFC 9175 §3.4).
			resp.Options = resp.Options.Remove(coap.Block1)
			return c.complete(ctx, req, resp, tag)
		case resp.Code.Class() != 2:
			// 4.08, 4.13 for good, 5.xx: the server's final word.
			return resp, nil
		case hasB1 && rb.Offset() != int64(off):
			// §2.3: the acknowledged block is the one sent, numbered in
			// the server's block size when it asks for a smaller one
			// (RFC 7959 Figure 7).
			return nil, fmt.Errorf("%w: block %d acknowledged as %d/%d", ErrBlockwise, sent.Num, rb.Num, rb.Size())
		case resp.Code != coap.Continue && !hasB1:
			// A server that answers a non-final Block1 block with a final
			// 2.xx and no Block1 has not taken part in the transfer.
			return nil, fmt.Errorf("%w: block %d answered %v without Block1", ErrBlockwise, sent.Num, resp.Code)
		}
		off = end
		if hasB1 && rb.SZX < szx {
			// §2.5: the server prefers smaller blocks from now on; off
			// is a multiple of any smaller power of two.
			szx = rb.SZX
		}
	}
}
