package bridge

import (
	"crypto/sha256"
	"errors"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/plugins/sdk/blockwise"
)

// Block-wise answers of the gateway's own resources (RFC 7959 §2.4):
// /.well-known/core and the broker's listings grow with the routes and
// topics, and a representation larger than a block goes in blocks, the
// size the client asks for (Block2 with NUM 0) or defaultSZX, each with
// an ETag so that a client sees a change between two blocks, and Size2
// when the client asks for it (§4). To an unverified client the block is
// as large as fits three times its request (amp.go), with an Echo value
// that verifies the client for what it asks next, if that fits too (RFC
// 9175 §2.3: a client echoes an Echo option of any response).

// defaultSZX is the block size of a client that asks for none: 1024
// bytes, the largest RFC 7959 §2.2 has.
const defaultSZX = 6

// blockRequest is what a request asks of a block-wise answer.
type blockRequest struct {
	block blockwise.Block // control usage (§2.3): the block and size wanted
	asked bool            // the request had Block2
	size2 bool            // the request asked for Size2 (§4)
}

// takeBlock2 reads and removes the request's Block2 and Size2 options: the
// gateway's resources answer whole, and blockWriter cuts. It returns r
// unchanged when there is nothing to take.
func takeBlock2(r *coap.Request) (*coap.Request, blockRequest, error) {
	var br blockRequest
	b, ok, err := blockwise.Get(r.Msg.Options, coap.Block2)
	if err != nil {
		// RFC 7252 §5.4.1: a critical option with a value it cannot have
		// is an unrecognized one.
		return r, br, coap.Errorf(coap.BadOption, "Block2: %v", err)
	}
	br.block, br.asked = b, ok
	if !br.asked {
		br.block.SZX = defaultSZX
	}
	br.block.SZX = min(br.block.SZX, defaultSZX)
	br.size2 = r.Msg.Options.Has(coap.Size2)
	if !ok && !br.size2 {
		return r, br, nil
	}
	req := *r
	m := *r.Msg
	m.Options = append(coap.Options(nil), r.Msg.Options...).Remove(coap.Block2).Remove(coap.Size2)
	req.Msg = &m
	return &req, br, nil
}

// blockWriter cuts a 2.05 into the block the request asks for: the local
// stage's part of the writer it hands on.
type blockWriter struct {
	coap.PassFinish
	br    blockRequest
	limit *limitWriter // an unverified client's limit; nil when verified
}

var _ coap.Wrapper = (*blockWriter)(nil)

func (b *blockWriter) Write(next coap.Next, resp *coap.Message) error {
	if resp.Code != coap.Content || resp.Options.Has(coap.Block2) {
		return next.Write(resp)
	}
	out, err := b.cut(resp)
	if err != nil {
		return next.Write(errResponse(err))
	}
	return next.Write(out)
}

// cut is resp as the block asked for, or resp itself when it is one
// block of the size asked for and within the limit.
func (b *blockWriter) cut(resp *coap.Message) (*coap.Message, error) {
	req := b.br.block
	body := resp.Payload
	off := req.Offset()
	if off > 0 && off >= int64(len(body)) {
		return nil, coap.Errorf(coap.BadOption, "Block2: block %d of %d bytes is past the end (%d bytes)", req.Num, req.Size(), len(body))
	}
	fits := func(m *coap.Message) bool { return b.limit == nil || b.limit.size(m) <= b.limit.limit }
	if off == 0 && len(body) <= req.Size() && !b.br.size2 && fits(resp) {
		return resp, nil
	}
	etag, hasETag := resp.Options.Get(coap.ETag)
	if !hasETag {
		sum := sha256.Sum256(body)
		etag = sum[:4]
	}
	var echo []byte
	if b.limit != nil {
		echo = b.limit.v.echo(b.limit.peer)
	}
	// The block asked for, or a smaller one that fits the limit (§2.4:
	// the server may use a smaller size; the block number then counts in
	// it). With the Echo value if that fits too.
	for _, withEcho := range []bool{echo != nil, false} {
		for szx := int(req.SZX); szx >= 0; szx-- {
			blk := blockwise.Block{SZX: uint8(szx), Num: uint32(off >> (szx + 4))}
			start := int(blk.Offset())
			end := min(start+blk.Size(), len(body))
			blk.More = end < len(body)
			out := &coap.Message{Code: resp.Code, Payload: body[start:end]}
			out.Options = append(coap.Options(nil), resp.Options...)
			if !hasETag {
				out.Options = out.Options.Insert(coap.ETag, etag)
			}
			out.Options = out.Options.Set(coap.Block2, blk.Value())
			if b.br.size2 || (blk.Num == 0 && blk.More) {
				out.Options = out.Options.SetUint(coap.Size2, uint32(len(body)))
			}
			if withEcho {
				out.Options = out.Options.Set(coap.Echo, echo)
			}
			if fits(out) {
				if b.limit != nil && (blk.More || blk.Num > 0) {
					b.limit.v.blocks.Add(1)
				}
				return out, nil
			}
		}
	}
	// Not even 16 bytes fit: the limit decides (the challenge).
	return resp, nil
}

// errResponse is the response for err, as the endpoint would make it.
func errResponse(err error) *coap.Message {
	var ce *coap.Error
	if errors.As(err, &ce) {
		return ce.Response()
	}
	return &coap.Message{Code: coap.InternalServerError}
}
