package blockwise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/opaque-edge/gatewayd/coap"
)

// origin is a CoAP server as a RoundTripFunc, with one resource whose
// representation it serves in Block2 blocks of at most 2**(szx+4) bytes
// (with ETag and Size2, as libcoap does) and replaces with PUT or POST
// bodies it assembles from Block1 blocks, atomically (RFC 7959 §2.5).
type origin struct {
	t       *testing.T
	body    []byte
	etag    byte
	szx     uint8 // its preferred block size
	noSize2 bool
	// before, when set, runs before each request is answered: a test's
	// way to change the resource mid-transfer.
	before func(o *origin, req *coap.Message)
	// answer, when set and returning a response, answers instead.
	answer func(req *coap.Message) *coap.Message

	reqs    []*coap.Message
	partial []byte // the Block1 body being assembled
	ptag    []byte // its Request-Tag
}

func newOrigin(t *testing.T, body []byte) *origin {
	return &origin{t: t, body: body, etag: 1, szx: 6}
}

func (o *origin) roundTrip(_ context.Context, req *coap.Message) (*coap.Message, error) {
	o.reqs = append(o.reqs, req.Clone())
	if o.before != nil {
		o.before(o, req)
	}
	if o.answer != nil {
		if r := o.answer(req); r != nil {
			return r, nil
		}
	}
	switch req.Code {
	case coap.GET, coap.FETCH:
		return o.get(req)
	case coap.PUT, coap.POST:
		return o.put(req)
	}
	return &coap.Message{Code: coap.MethodNotAllowed}, nil
}

func (o *origin) get(req *coap.Message) (*coap.Message, error) {
	szx := o.szx
	var num uint32
	if b, ok, err := Get(req.Options, coap.Block2); err != nil {
		return &coap.Message{Code: coap.BadRequest}, nil
	} else if ok {
		off := b.Offset()
		szx = min(szx, b.SZX)
		num = uint32(off >> (szx + 4))
	}
	return o.block(coap.Content, num, szx), nil
}

// block is block num of the current representation.
func (o *origin) block(code coap.Code, num uint32, szx uint8) *coap.Message {
	size := 1 << (szx + 4)
	off := int(num) * size
	resp := &coap.Message{Code: code, Options: coap.Options(nil).Insert(coap.ETag, []byte{o.etag})}
	if len(o.body) <= size && num == 0 {
		resp.Payload = o.body
		return resp
	}
	end := min(off+size, len(o.body))
	if off > len(o.body) {
		off = len(o.body)
	}
	resp.Options = resp.Options.Insert(coap.Block2, Block{Num: num, More: end < len(o.body), SZX: szx}.Value())
	if !o.noSize2 {
		resp.Options = resp.Options.SetUint(coap.Size2, uint32(len(o.body)))
	}
	resp.Payload = o.body[off:end]
	return resp
}

func (o *origin) put(req *coap.Message) (*coap.Message, error) {
	b, ok, err := Get(req.Options, coap.Block1)
	if err != nil {
		return &coap.Message{Code: coap.BadRequest}, nil
	}
	if !ok {
		if _, ok := req.Options.Get(coap.Block2); ok {
			// A later block of the response to the last PUT or POST.
			return o.get(req)
		}
		o.body, o.etag = bytes.Clone(req.Payload), o.etag+1
		return &coap.Message{Code: coap.Changed}, nil
	}
	tag, _ := req.Options.Get(coap.RequestTag)
	if b.Num == 0 {
		o.partial, o.ptag = nil, bytes.Clone(tag)
	}
	if !bytes.Equal(tag, o.ptag) || b.Offset() != int64(len(o.partial)) {
		return &coap.Message{Code: coap.RequestEntityIncomplete}, nil
	}
	o.partial = append(o.partial, req.Payload...)
	szx := min(b.SZX, o.szx)
	ack := Block{Num: uint32(b.Offset() >> (szx + 4)), More: b.More, SZX: szx}
	if b.More {
		return &coap.Message{Code: coap.Continue, Options: coap.Options(nil).Insert(coap.Block1, ack.Value())}, nil
	}
	o.body, o.etag = o.partial, o.etag+1
	return &coap.Message{Code: coap.Changed, Options: coap.Options(nil).Insert(coap.Block1, ack.Value())}, nil
}

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func get(uri string) *coap.Message {
	return &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: []byte{9}, Options: coap.Options(nil).Insert(coap.URIPath, []byte(uri))}
}

func TestDoFetchesEveryBlockOfALargeRepresentation(t *testing.T) {
	o := newOrigin(t, body(10240))
	c := &Client{RoundTrip: o.roundTrip}
	resp, err := c.Do(t.Context(), get("big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Payload, o.body) {
		t.Fatalf("got %d bytes, want the %d of the representation", len(resp.Payload), len(o.body))
	}
	if resp.Options.Has(coap.Block2) || resp.Options.Has(coap.Size2) {
		t.Errorf("whole response keeps %v", resp.Options)
	}
	if tag, _ := resp.Options.Get(coap.ETag); !bytes.Equal(tag, []byte{1}) {
		t.Errorf("ETag %x", tag)
	}
	if len(o.reqs) != 10 {
		t.Fatalf("%d requests, want 10 of 1024 bytes", len(o.reqs))
	}
	for i, r := range o.reqs[1:] {
		b, ok, _ := Get(r.Options, coap.Block2)
		if !ok || b.Num != uint32(i+1) || b.SZX != 6 || b.More {
			t.Errorf("request %d asks %+v", i+1, b)
		}
		if r.Options.Has(coap.RequestTag) {
			t.Errorf("request %d carries a Request-Tag although nothing changed", i+1)
		}
	}
}

func TestLaterBlocksAreAskedInTheSmallerOfBothSizes(t *testing.T) {
	for _, c := range []struct {
		name       string
		server     uint8
		client     int
		wantSZX    uint8
		wantBlocks int
	}{
		{"client smaller", 6, 256, 4, 1 + (5000-1024+255)/256},
		{"server smaller", 3, 1024, 3, (5000 + 127) / 128},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := newOrigin(t, body(5000))
			o.szx = c.server
			resp, err := (&Client{RoundTrip: o.roundTrip, BlockSize: c.client}).Do(t.Context(), get("big"))
			if err != nil || !bytes.Equal(resp.Payload, o.body) {
				t.Fatalf("%v, %v", err, resp)
			}
			if len(o.reqs) != c.wantBlocks {
				t.Errorf("%d requests, want %d", len(o.reqs), c.wantBlocks)
			}
			last, _, _ := Get(o.reqs[len(o.reqs)-1].Options, coap.Block2)
			if last.SZX != c.wantSZX {
				t.Errorf("asked SZX %d, want %d", last.SZX, c.wantSZX)
			}
		})
	}
}

// RFC 7959 §2.4: blocks whose ETag differs from block 0's belong to
// another representation. The client starts over with a Request-Tag
// (which no cache has seen) and delivers the new one whole; nothing of
// the old one is spliced in.
func TestChangedRepresentationIsFetchedAgainNeverSpliced(t *testing.T) {
	old, fresh := body(4096), bytes.Repeat([]byte{0xee}, 4096)
	o := newOrigin(t, old)
	o.before = func(o *origin, req *coap.Message) {
		if b, _, _ := Get(req.Options, coap.Block2); b.Num == 2 && o.etag == 1 {
			o.body, o.etag = fresh, 2
		}
	}
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), get("big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Payload, fresh) {
		t.Fatalf("got a body that is not the new representation (first byte %x, last %x)", resp.Payload[0], resp.Payload[len(resp.Payload)-1])
	}
	if tag, _ := resp.Options.Get(coap.ETag); !bytes.Equal(tag, []byte{2}) {
		t.Errorf("ETag %x, want the new one", tag)
	}
	// The change was seen: the block-2 request got the new ETag, and the
	// fetch started over with a Request-Tag on every request after.
	restart := -1
	for i, r := range o.reqs {
		if r.Options.Has(coap.RequestTag) {
			restart = i
			break
		}
	}
	if restart != 3 {
		t.Fatalf("restart at request %d, want 3 (after blocks 0, 1 and the changed 2)", restart)
	}
	tag, _ := o.reqs[restart].Options.Get(coap.RequestTag)
	for i, r := range o.reqs[restart:] {
		if v, _ := r.Options.Get(coap.RequestTag); !bytes.Equal(v, tag) {
			t.Errorf("request %d of the restart has Request-Tag %x, want %x", i, v, tag)
		}
	}
}

func TestRepresentationThatNeverHoldsStillFails(t *testing.T) {
	o := newOrigin(t, body(4096))
	o.before = func(o *origin, req *coap.Message) { o.etag++ }
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), get("big"))
	if !errors.Is(err, ErrBlockwise) || resp != nil {
		t.Fatalf("resp %v, err %v; want ErrBlockwise and nothing", resp, err)
	}
	if len(o.reqs) != 2*MaxAttempts {
		t.Errorf("%d requests, want %d: block 0 and 1 of each attempt", len(o.reqs), 2*MaxAttempts)
	}
}

func TestRepresentationOverMaxBodyIsRefusedWhole(t *testing.T) {
	t.Run("Size2 tells at once", func(t *testing.T) {
		o := newOrigin(t, body(10240))
		resp, err := (&Client{RoundTrip: o.roundTrip, MaxBody: 4096}).Do(t.Context(), get("big"))
		var tl *TooLargeError
		if !errors.As(err, &tl) || tl.Size != 10240 || tl.Max != 4096 || tl.Request || resp != nil {
			t.Fatalf("resp %v, err %v", resp, err)
		}
		if !errors.Is(err, ErrTooLarge) {
			t.Error("not ErrTooLarge")
		}
		if len(o.reqs) != 1 {
			t.Errorf("%d requests after Size2 said 10240", len(o.reqs))
		}
	})
	t.Run("without Size2, stops past the maximum", func(t *testing.T) {
		o := newOrigin(t, body(10240))
		o.noSize2 = true
		resp, err := (&Client{RoundTrip: o.roundTrip, MaxBody: 4096}).Do(t.Context(), get("big"))
		var tl *TooLargeError
		if !errors.As(err, &tl) || tl.Size <= 4096 || resp != nil {
			t.Fatalf("resp %v, err %v", resp, err)
		}
		if len(o.reqs) != 5 {
			t.Errorf("%d requests, want 5: the fifth KiB passes 4096", len(o.reqs))
		}
	})
	t.Run("exactly the maximum passes", func(t *testing.T) {
		o := newOrigin(t, body(4096))
		resp, err := (&Client{RoundTrip: o.roundTrip, MaxBody: 4096}).Do(t.Context(), get("big"))
		if err != nil || len(resp.Payload) != 4096 {
			t.Fatalf("%v %v", resp, err)
		}
	})
}

func TestBrokenBlocksFailTheTransfer(t *testing.T) {
	cases := map[string]func(req *coap.Message) *coap.Message{
		"short block with M": func(req *coap.Message) *coap.Message {
			if b, ok, _ := Get(req.Options, coap.Block2); ok && b.Num == 1 {
				return &coap.Message{Code: coap.Content, Payload: make([]byte, 100),
					Options: coap.Options(nil).Insert(coap.ETag, []byte{1}).Insert(coap.Block2, Block{Num: 1, More: true, SZX: 6}.Value())}
			}
			return nil
		},
		"block of another offset": func(req *coap.Message) *coap.Message {
			if b, ok, _ := Get(req.Options, coap.Block2); ok && b.Num == 1 {
				return &coap.Message{Code: coap.Content, Payload: make([]byte, 1024),
					Options: coap.Options(nil).Insert(coap.ETag, []byte{1}).Insert(coap.Block2, Block{Num: 2, More: true, SZX: 6}.Value())}
			}
			return nil
		},
		"no Block2": func(req *coap.Message) *coap.Message {
			if req.Options.Has(coap.Block2) {
				return &coap.Message{Code: coap.Content, Payload: make([]byte, 10), Options: coap.Options(nil).Insert(coap.ETag, []byte{1})}
			}
			return nil
		},
		"reserved SZX": func(req *coap.Message) *coap.Message {
			if req.Options.Has(coap.Block2) {
				return &coap.Message{Code: coap.Content, Options: coap.Options(nil).Insert(coap.ETag, []byte{1}).Insert(coap.Block2, []byte{0x17})}
			}
			return nil
		},
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			o := newOrigin(t, body(4096))
			o.answer = answer
			resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), get("big"))
			if !errors.Is(err, ErrBlockwise) || resp != nil {
				t.Fatalf("resp %v, err %v; want ErrBlockwise", resp, err)
			}
		})
	}
}

func TestErrorResponseToALaterBlockIsTheAnswer(t *testing.T) {
	o := newOrigin(t, body(4096))
	o.answer = func(req *coap.Message) *coap.Message {
		if b, ok, _ := Get(req.Options, coap.Block2); ok && b.Num == 2 {
			return &coap.Message{Code: coap.ServiceUnavailable, Payload: []byte("busy")}
		}
		return nil
	}
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), get("big"))
	if err != nil || resp.Code != coap.ServiceUnavailable || string(resp.Payload) != "busy" {
		t.Fatalf("%v %v, want the 5.03 alone", resp, err)
	}
}

// RFC 7959 §2.6, §3.4: a notification carries block 0; the rest comes
// with GET and Block2, without Observe; the whole keeps the notification's
// Observe number.
func TestCompleteFinishesANotification(t *testing.T) {
	o := newOrigin(t, body(3000))
	reg := get("big")
	reg.Options = reg.Options.SetUint(coap.Observe, 0)
	n := o.block(coap.Content, 0, 6)
	n.Options = n.Options.SetUint(coap.Observe, 42)
	n.Token = []byte{7}
	whole, err := (&Client{RoundTrip: o.roundTrip}).Complete(t.Context(), reg, n)
	if err != nil || !bytes.Equal(whole.Payload, o.body) {
		t.Fatalf("%v, %v", err, whole)
	}
	if v, _ := whole.Options.Uint(coap.Observe); v != 42 || !bytes.Equal(whole.Token, []byte{7}) {
		t.Errorf("Observe %d token %x, want the notification's", v, whole.Token)
	}
	for _, r := range o.reqs {
		if r.Options.Has(coap.Observe) {
			t.Errorf("a block request carries Observe: %v", r.Options)
		}
	}
	if len(o.reqs) != 2 {
		t.Errorf("%d requests, want blocks 1 and 2", len(o.reqs))
	}
}

func TestCompleteLeavesAWholeResponseAlone(t *testing.T) {
	o := newOrigin(t, body(100))
	r := o.block(coap.Content, 0, 6)
	got, err := (&Client{RoundTrip: o.roundTrip}).Complete(t.Context(), get("x"), r)
	if err != nil || got != r || len(o.reqs) != 0 {
		t.Fatalf("%v %v, %d requests", got, err, len(o.reqs))
	}
}

// RFC 7959 §2.5, §4; RFC 9175 §3: a body over one block goes in Block1
// blocks with one Request-Tag, Size1 with the first, and the origin
// assembles it whole.
func TestDoSendsALargeBodyInBlock1Blocks(t *testing.T) {
	o := newOrigin(t, nil)
	in := body(10240)
	req := &coap.Message{Code: coap.PUT, Payload: in, Options: coap.Options(nil).Insert(coap.URIPath, []byte("big")).SetUint(coap.ContentFormat, 42)}
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), req)
	if err != nil || resp.Code != coap.Changed {
		t.Fatalf("%v %v", resp, err)
	}
	if !bytes.Equal(o.body, in) {
		t.Fatalf("origin has %d bytes, want the %d sent", len(o.body), len(in))
	}
	if len(o.reqs) != 10 {
		t.Fatalf("%d requests, want 10", len(o.reqs))
	}
	tag, ok := o.reqs[0].Options.Get(coap.RequestTag)
	if !ok {
		t.Fatal("no Request-Tag")
	}
	for i, r := range o.reqs {
		b, _, _ := Get(r.Options, coap.Block1)
		if b.Num != uint32(i) || b.More != (i < 9) || b.SZX != 6 {
			t.Errorf("block %d: %+v", i, b)
		}
		if v, _ := r.Options.Get(coap.RequestTag); !bytes.Equal(v, tag) {
			t.Errorf("block %d: Request-Tag %x, want %x", i, v, tag)
		}
		if s, ok := r.Options.Uint(coap.Size1); ok != (i == 0) || ok && s != 10240 {
			t.Errorf("block %d: Size1 %d (%v)", i, s, ok)
		}
	}
	if resp.Options.Has(coap.Block1) {
		t.Error("the whole response keeps Block1")
	}
	if !bytes.Equal(req.Payload, in) {
		t.Error("the caller's request was changed")
	}
}

func TestBlock1FollowsTheServersSmallerSize(t *testing.T) {
	o := newOrigin(t, nil)
	o.szx = 4 // 256 bytes
	in := body(3000)
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), &coap.Message{Code: coap.PUT, Payload: in})
	if err != nil || resp.Code != coap.Changed || !bytes.Equal(o.body, in) {
		t.Fatalf("%v %v, origin has %d bytes", resp, err, len(o.body))
	}
	// 1024 first, then 256-byte blocks from offset 1024 (NUM 4).
	if b, _, _ := Get(o.reqs[1].Options, coap.Block1); b.Num != 4 || b.SZX != 4 {
		t.Errorf("second block %+v, want 4/256", b)
	}
	if want := 1 + (3000-1024+255)/256; len(o.reqs) != want {
		t.Errorf("%d requests, want %d", len(o.reqs), want)
	}
}

func TestBlock1StartsOverSmallerAfterA413WithBlock1(t *testing.T) {
	o := newOrigin(t, nil)
	o.answer = func(req *coap.Message) *coap.Message {
		if b, ok, _ := Get(req.Options, coap.Block1); ok && b.SZX > 5 {
			return &coap.Message{Code: coap.RequestEntityTooLarge, Options: coap.Options(nil).Insert(coap.Block1, Block{SZX: 5}.Value())}
		}
		return nil
	}
	in := body(2000)
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), &coap.Message{Code: coap.PUT, Payload: in})
	if err != nil || resp.Code != coap.Changed || !bytes.Equal(o.body, in) {
		t.Fatalf("%v %v", resp, err)
	}
	t0, _ := o.reqs[0].Options.Get(coap.RequestTag)
	t1, _ := o.reqs[1].Options.Get(coap.RequestTag)
	if bytes.Equal(t0, t1) {
		t.Error("the restart reuses the Request-Tag")
	}
}

// RFC 8075 §8.3: a 4.13 to a body sent whole is retried in blocks.
func TestA413ToAWholeBodyIsRetriedInBlocks(t *testing.T) {
	o := newOrigin(t, nil)
	o.answer = func(req *coap.Message) *coap.Message {
		if !req.Options.Has(coap.Block1) && len(req.Payload) > 256 {
			return &coap.Message{Code: coap.RequestEntityTooLarge}
		}
		return nil
	}
	in := body(800)
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), &coap.Message{Code: coap.PUT, Payload: in})
	if err != nil || resp.Code != coap.Changed || !bytes.Equal(o.body, in) {
		t.Fatalf("%v %v", resp, err)
	}
	if b, _, _ := Get(o.reqs[1].Options, coap.Block1); b.SZX != 5 {
		t.Errorf("retried with %+v, want 512-byte blocks", b)
	}
}

func TestA402ToBlock1SendsTheBodyWhole(t *testing.T) {
	o := newOrigin(t, nil)
	o.answer = func(req *coap.Message) *coap.Message {
		if req.Options.Has(coap.Block1) {
			return &coap.Message{Code: coap.BadOption}
		}
		return nil
	}
	in := body(2000)
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), &coap.Message{Code: coap.PUT, Payload: in})
	if err != nil || resp.Code != coap.Changed || !bytes.Equal(o.body, in) || len(o.reqs) != 2 {
		t.Fatalf("%v %v, %d requests", resp, err, len(o.reqs))
	}
}

func TestRequestBodyOverMaxBodyIsNotSent(t *testing.T) {
	o := newOrigin(t, nil)
	_, err := (&Client{RoundTrip: o.roundTrip, MaxBody: 1000}).Do(t.Context(), &coap.Message{Code: coap.PUT, Payload: body(1001)})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !tl.Request || tl.Size != 1001 || tl.Max != 1000 {
		t.Fatalf("err %v", err)
	}
	if len(o.reqs) != 0 {
		t.Errorf("%d requests sent", len(o.reqs))
	}
}

// RFC 7959 §2.7, Figure 10: after the Block1 phase, the response's later
// blocks are asked without payload and without Block1, with the
// Request-Tag of the Block1 phase (RFC 9175 §3.4).
func TestPostWithLargeBodyAndLargeResponse(t *testing.T) {
	o := newOrigin(t, nil)
	o.answer = func(req *coap.Message) *coap.Message {
		if b, ok, _ := Get(req.Options, coap.Block1); ok && !b.More {
			o.put(req) // assemble
			r := o.block(coap.Changed, 0, 6)
			r.Options = r.Options.Insert(coap.Block1, b.Value())
			return r
		}
		if req.Options.Has(coap.Block2) {
			b, _, _ := Get(req.Options, coap.Block2)
			return o.block(coap.Changed, b.Num, 6)
		}
		return nil
	}
	in := body(2500)
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), &coap.Message{Code: coap.POST, Payload: in})
	if err != nil || resp.Code != coap.Changed || !bytes.Equal(resp.Payload, in) {
		t.Fatalf("%v %v", resp, err)
	}
	tag, _ := o.reqs[0].Options.Get(coap.RequestTag)
	for _, r := range o.reqs[3:] {
		if len(r.Payload) != 0 || r.Options.Has(coap.Block1) || r.Code != coap.POST {
			t.Errorf("Block2 request %v carries %d bytes, Block1 %v", r.Code, len(r.Payload), r.Options.Has(coap.Block1))
		}
		if v, _ := r.Options.Get(coap.RequestTag); !bytes.Equal(v, tag) {
			t.Errorf("Block2 request Request-Tag %x, want %x", v, tag)
		}
	}
	if len(o.reqs) != 5 {
		t.Errorf("%d requests, want 3 Block1 and 2 Block2 (block 0 came with the last Block1)", len(o.reqs))
	}
}

func TestRequestInItsSendersOwnTransferPassesUntouched(t *testing.T) {
	o := newOrigin(t, body(4096))
	req := get("big")
	req.Options = req.Options.Insert(coap.Block2, Block{Num: 2, SZX: 6}.Value())
	resp, err := (&Client{RoundTrip: o.roundTrip}).Do(t.Context(), req)
	if err != nil || len(o.reqs) != 1 || !bytes.Equal(resp.Payload, o.body[2048:3072]) {
		t.Fatalf("%v %v, %d requests", resp, err, len(o.reqs))
	}
}

func TestBlockOptionRoundTrip(t *testing.T) {
	for _, b := range []Block{{}, {Num: 1, SZX: 6}, {Num: 15, More: true, SZX: 2}, {Num: 4095, SZX: 6}, {Num: maxNum, More: true, SZX: 0}} {
		got, err := ParseBlock(b.Value())
		if err != nil || got != b {
			t.Errorf("%+v came back as %+v (%v)", b, got, err)
		}
		if n := len(b.Value()); n > 3 {
			t.Errorf("%+v encodes in %d bytes", b, n)
		}
	}
	for _, v := range [][]byte{{0x07}, {1, 2, 3, 4}} {
		if _, err := ParseBlock(v); !errors.Is(err, ErrBlockwise) {
			t.Errorf("%x: err %v", v, err)
		}
	}
	if got := fmt.Sprint(Block{Num: 3, SZX: 6}.Offset()); got != "3072" {
		t.Errorf("offset %s", got)
	}
}

// FuzzComplete serves a first response and then, to each request for a
// later block, the next of a sequence of responses, all from the fuzzer:
// whatever the peers send, Complete never panics, asks no more than it
// is answered, and never returns more than MaxBody bytes as a whole.
func FuzzComplete(f *testing.F) {
	o := newOrigin(nil, body(3000))
	var seed []byte
	for _, m := range []*coap.Message{o.block(coap.Content, 0, 6), o.block(coap.Content, 1, 6), o.block(coap.Content, 2, 6)} {
		b, _ := m.Marshal()
		seed = append(seed, byte(len(b)>>8), byte(len(b)))
		seed = append(seed, b...)
	}
	f.Add(seed)
	changed := bytes.Clone(seed)
	changed[len(changed)-1] ^= 1
	f.Add(changed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var msgs []*coap.Message
		for len(data) >= 2 {
			n := int(data[0])<<8 | int(data[1])
			data = data[2:]
			if n > len(data) {
				break
			}
			m := new(coap.Message)
			if m.Decode(data[:n]) == nil {
				msgs = append(msgs, m)
			}
			data = data[n:]
		}
		if len(msgs) == 0 {
			return
		}
		asked := 0
		c := &Client{MaxBody: 2048, RoundTrip: func(context.Context, *coap.Message) (*coap.Message, error) {
			asked++
			if asked >= len(msgs) {
				return nil, errors.New("no more")
			}
			return msgs[asked], nil
		}}
		whole, err := c.Complete(context.Background(), get("x"), msgs[0])
		if asked > len(msgs) {
			t.Fatalf("asked %d times for %d answers", asked, len(msgs))
		}
		if err == nil && whole == nil {
			t.Fatal("no whole and no error")
		}
		if err == nil && whole != msgs[0] && whole.Code.Class() == 2 && len(whole.Payload) > 2048 {
			t.Fatalf("a whole of %d bytes over MaxBody", len(whole.Payload))
		}
	})
}
