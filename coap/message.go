package coap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is the CoAP message type (RFC 7252 §3).
type Type uint8

// Message types.
const (
	Confirmable     Type = 0
	NonConfirmable  Type = 1
	Acknowledgement Type = 2
	Reset           Type = 3
)

func (t Type) String() string {
	switch t {
	case Confirmable:
		return "CON"
	case NonConfirmable:
		return "NON"
	case Acknowledgement:
		return "ACK"
	case Reset:
		return "RST"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Codec errors. Decode wraps them with context; callers branch with errors.Is.
var (
	ErrTruncated      = errors.New("coap: message truncated")
	ErrVersion        = errors.New("coap: unsupported version")
	ErrTokenLength    = errors.New("coap: token length over 8")
	ErrOptionFormat   = errors.New("coap: bad option encoding")
	ErrPayloadMarker  = errors.New("coap: payload marker without payload")
	ErrEmptyNotEmpty  = errors.New("coap: empty message with token, options or payload")
	ErrBufferTooSmall = errors.New("coap: buffer too small")
	ErrOptionOrder    = errors.New("coap: options out of order")
)

// MaxTokenLen is the longest token RFC 7252 §3 allows.
const MaxTokenLen = 8

// Message is one CoAP message. After Decode its slices alias the decoded
// buffer: copy the message (Clone) before the buffer is reused.
type Message struct {
	Type    Type
	Code    Code
	MID     uint16
	Token   []byte
	Options Options // non-decreasing option numbers; unknown ones and repeats kept
	Payload []byte
}

// Decode parses b into m (RFC 7252 §3), reusing m's option slice. It keeps
// every option as raw bytes in wire order. Token, option values and payload
// alias b.
func (m *Message) Decode(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	if b[0]>>6 != 1 {
		return ErrVersion
	}
	tkl := int(b[0] & 0x0f)
	if tkl > MaxTokenLen {
		// §3: lengths 9-15 are reserved and a message format error.
		return ErrTokenLength
	}
	m.Type = Type(b[0] >> 4 & 0x3)
	m.Code = Code(b[1])
	m.MID = binary.BigEndian.Uint16(b[2:4])
	return m.DecodeBody(tkl, b[4:])
}

// DecodeBody parses what follows the header in every CoAP framing, the
// token of tkl bytes, the options and the payload (RFC 7252 §3; RFC 8323
// §3.2 and §4.2 differ only in the header), into m, whose Code the caller
// has set. Like Decode it keeps options raw and aliases b.
func (m *Message) DecodeBody(tkl int, b []byte) error {
	if tkl > MaxTokenLen {
		return ErrTokenLength
	}
	if len(b) < tkl {
		return ErrTruncated
	}
	m.Token = nil
	if tkl > 0 {
		m.Token = b[:tkl:tkl]
	}
	b = b[tkl:]
	m.Options = m.Options[:0]
	m.Payload = nil
	var prev uint32
	for len(b) > 0 {
		if b[0] == 0xff {
			if len(b) == 1 {
				return ErrPayloadMarker // §3: marker followed by zero-length payload
			}
			m.Payload = b[1:]
			break
		}
		delta, length := uint32(b[0]>>4), uint32(b[0]&0x0f)
		b = b[1:]
		var err error
		if delta, b, err = extended(delta, b); err != nil {
			return err
		}
		if length, b, err = extended(length, b); err != nil {
			return err
		}
		id := prev + delta
		if id > 0xffff {
			return fmt.Errorf("%w: option number %d", ErrOptionFormat, id)
		}
		if uint32(len(b)) < length {
			return ErrTruncated
		}
		m.Options = append(m.Options, Option{ID: OptionID(id), Value: b[:length:length]})
		b = b[length:]
		prev = id
	}
	if m.Code == Empty && (tkl != 0 || len(m.Options) != 0 || m.Payload != nil) {
		// §4.1: an Empty message with anything after the Message ID is a
		// message format error.
		return ErrEmptyNotEmpty
	}
	return nil
}

// extended reads an option delta or length nibble's extension (§3.1).
func extended(v uint32, b []byte) (uint32, []byte, error) {
	switch v {
	case 13:
		if len(b) < 1 {
			return 0, nil, ErrTruncated
		}
		return uint32(b[0]) + 13, b[1:], nil
	case 14:
		if len(b) < 2 {
			return 0, nil, ErrTruncated
		}
		return uint32(binary.BigEndian.Uint16(b)) + 269, b[2:], nil
	case 15:
		// 15 is reserved for the payload marker; elsewhere it is an error.
		return 0, nil, ErrOptionFormat
	}
	return v, b, nil
}

// Size reports the encoded length of m.
func (m *Message) Size() int {
	n := 4 + len(m.Token)
	var prev OptionID
	for _, o := range m.Options {
		n += 1 + extLen(uint32(o.ID-prev)) + extLen(uint32(len(o.Value))) + len(o.Value)
		prev = o.ID
	}
	if len(m.Payload) > 0 {
		n += 1 + len(m.Payload)
	}
	return n
}

func extLen(v uint32) int {
	switch {
	case v < 13:
		return 0
	case v < 269:
		return 1
	}
	return 2
}

// MarshalTo encodes m into buf and returns the number of bytes written.
// Options must be sorted by number (Options.Insert keeps them so).
func (m *Message) MarshalTo(buf []byte) (int, error) {
	if len(m.Token) > MaxTokenLen {
		return 0, ErrTokenLength
	}
	if m.Type > Reset {
		return 0, fmt.Errorf("coap: bad type %d", m.Type)
	}
	size := m.Size()
	if len(buf) < size {
		return 0, ErrBufferTooSmall
	}
	buf[0] = 1<<6 | byte(m.Type)<<4 | byte(len(m.Token))
	buf[1] = byte(m.Code)
	binary.BigEndian.PutUint16(buf[2:], m.MID)
	off := 4 + copy(buf[4:], m.Token)
	var prev OptionID
	for _, o := range m.Options {
		if o.ID < prev {
			return 0, ErrOptionOrder
		}
		if len(o.Value) > 0xffff+269 {
			return 0, fmt.Errorf("%w: option %d value of %d bytes", ErrOptionFormat, o.ID, len(o.Value))
		}
		d, l := uint32(o.ID-prev), uint32(len(o.Value))
		h := off
		off++
		buf[h] = nibble(d)<<4 | nibble(l)
		off = putExt(buf, off, d)
		off = putExt(buf, off, l)
		off += copy(buf[off:], o.Value)
		prev = o.ID
	}
	if len(m.Payload) > 0 {
		buf[off] = 0xff
		off++
		off += copy(buf[off:], m.Payload)
	}
	return off, nil
}

func nibble(v uint32) byte {
	switch {
	case v < 13:
		return byte(v)
	case v < 269:
		return 13
	}
	return 14
}

func putExt(buf []byte, off int, v uint32) int {
	switch {
	case v < 13:
		return off
	case v < 269:
		buf[off] = byte(v - 13)
		return off + 1
	}
	binary.BigEndian.PutUint16(buf[off:], uint16(v-269))
	return off + 2
}

// Marshal encodes m into a new buffer.
func (m *Message) Marshal() ([]byte, error) {
	buf := make([]byte, m.Size())
	n, err := m.MarshalTo(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// AppendMarshal appends the encoding of m to buf.
func (m *Message) AppendMarshal(buf []byte) ([]byte, error) {
	n := len(buf)
	size := m.Size()
	buf = append(buf, make([]byte, size)...)
	w, err := m.MarshalTo(buf[n:])
	if err != nil {
		return buf[:n], err
	}
	return buf[:n+w], nil
}

// Clone returns a deep copy of m that shares no memory with it. A small
// message (most requests and responses a proxy sees) takes one allocation
// for everything, in the smallest box it fits; a larger one two, or three
// when it has many options.
func (m *Message) Clone() *Message {
	n := len(m.Token) + len(m.Payload)
	for _, o := range m.Options {
		n += len(o.Value)
	}
	var c *Message
	var buf []byte
	k := len(m.Options)
	switch {
	case k <= 1 && n <= oneBytes:
		box := &oneBox{}
		c, buf = &box.m, box.data[:0:n]
		c.Options = box.opts[:0:k]
	case k <= 2 && n <= twoBytes:
		box := &twoBox{}
		c, buf = &box.m, box.data[:0:n]
		c.Options = box.opts[:0:k]
	case k <= tinyOptions && n <= tinyBytes:
		box := &tinyBox{}
		c, buf = &box.m, box.data[:0:n]
		c.Options = box.opts[:0:k]
	case k <= smallOptions:
		box := &messageBox{}
		c, buf = &box.m, make([]byte, 0, n)
		c.Options = box.opts[:0:k]
	default:
		c, buf = &Message{Options: make(Options, 0, k)}, make([]byte, 0, n)
	}
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		s := len(buf)
		buf = append(buf, b...)
		return buf[s:len(buf):len(buf)]
	}
	c.Type, c.Code, c.MID = m.Type, m.Code, m.MID
	c.Token = take(m.Token)
	for _, o := range m.Options {
		c.Options = append(c.Options, Option{ID: o.ID, Value: take(o.Value)})
	}
	if len(c.Options) == 0 {
		c.Options = nil
	}
	c.Payload = take(m.Payload)
	return c
}

// The sizes of the boxes a clone is made in, each filling a size class of
// Go's allocator (a Message is 80 bytes, an Option 32): a oneBox is 144
// bytes, room for a response with one option and a short payload, or a
// request with a Uri-Path; a twoBox 192, for a forwarded request with its
// token and Proxy-Uri, or a response with Content-Format and Max-Age; a
// tinyBox 256, for one with ETag, Content-Format and Max-Age besides.
const (
	oneBytes     = 32
	twoBytes     = 48
	tinyOptions  = 4
	tinyBytes    = 48
	smallOptions = 8
)

// messageBox and the smaller boxes are a message and room for its options
// (and, but in a messageBox, its bytes) in one allocation. The options'
// capacity is capped at their count, so appending to a clone's options
// reallocates instead of writing past them: a shallow copy of the message
// (as a stage keeps of a request it passes on) shares them.
type messageBox struct {
	m    Message
	opts [smallOptions]Option
}

type tinyBox struct {
	m    Message
	opts [tinyOptions]Option
	data [tinyBytes]byte
}

type twoBox struct {
	m    Message
	opts [2]Option
	data [twoBytes]byte
}

type oneBox struct {
	m    Message
	opts [1]Option
	data [oneBytes]byte
}

func (m *Message) String() string {
	return fmt.Sprintf("%v %v mid=%d token=%x options=%d payload=%dB", m.Type, m.Code, m.MID, m.Token, len(m.Options), len(m.Payload))
}
