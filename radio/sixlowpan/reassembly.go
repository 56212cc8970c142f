package sixlowpan

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// Reassembly defaults. The timeout is well under RFC 4944 §5.3's 60 s
// maximum: a radio link that has not delivered the rest of a datagram in
// 15 s will not, and the buffer is better spent on the next one.
const (
	DefaultReassemblyTimeout = 15 * time.Second
	DefaultMaxPerSource      = 4 * MaxDatagram
	DefaultMaxTotal          = 16 * MaxDatagram
	DefaultMaxDatagrams      = 64
)

// ReassemblyConfig bounds a Reassembler. Zero fields take the defaults.
type ReassemblyConfig struct {
	Timeout      time.Duration // drop a reassembly this long after its first fragment
	MaxPerSource int           // octets of reassembly buffers per link-layer source
	MaxTotal     int           // octets of reassembly buffers in all
	MaxDatagrams int           // reassemblies in progress in all
	// Now returns the current time; nil means time.Now. Tests inject a clock.
	Now func() time.Time
}

func (c *ReassemblyConfig) fill() {
	if c.Timeout <= 0 {
		c.Timeout = DefaultReassemblyTimeout
	}
	if c.MaxPerSource <= 0 {
		c.MaxPerSource = DefaultMaxPerSource
	}
	if c.MaxTotal <= 0 {
		c.MaxTotal = DefaultMaxTotal
	}
	if c.MaxDatagrams <= 0 {
		c.MaxDatagrams = DefaultMaxDatagrams
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Counters count what a Reassembler did. Reassemblies that were dropped
// are Timeouts + Evicted + Rejected + Overlaps.
type Counters struct {
	Datagrams   uint64 // complete datagrams returned, whole or reassembled
	Fragments   uint64 // fragments accepted into a reassembly
	Reassembled uint64 // datagrams completed from fragments
	Duplicates  uint64 // fragments received again and ignored
	Timeouts    uint64 // reassemblies dropped after Timeout
	Evicted     uint64 // reassemblies dropped, oldest first, to make room under a cap
	Rejected    uint64 // fragments of datagrams larger than a cap or MaxDatagram
	Overlaps    uint64 // reassemblies restarted on a conflicting overlap (RFC 4944 §5.3)
	Malformed   uint64 // payloads that did not parse or decompress
	BytesHeld   int    // octets of reassembly buffers now
	PeakHeld    int    // the most BytesHeld has been
	Pending     int    // reassemblies in progress now
}

type reasmKey struct {
	src, dst  mac.Addr
	size, tag uint16
}

type span struct{ off, end uint16 }

type reasm struct {
	key   reasmKey
	buf   []byte
	spans []span
	have  int
	start time.Time
	elem  *list.Element
}

// Reassembler turns received MAC payloads into IPv6 packets: it
// decompresses whole ones and reassembles fragmented ones (RFC 4944 §5.3),
// within byte caps per source and in total, dropping the oldest
// reassembly first when a new one needs the room. It is safe for
// concurrent use.
type Reassembler struct {
	codec *Codec
	cfg   ReassemblyConfig

	mu        sync.Mutex
	byKey     map[reasmKey]*reasm // guarded by mu
	order     *list.List          // of *reasm, oldest first; guarded by mu
	perSource map[mac.Addr]int    // octets held per source; guarded by mu
	scratch   []byte              // whole-packet output, reused; guarded by mu
	c         Counters            // guarded by mu
}

// NewReassembler returns a Reassembler that decompresses with codec.
func NewReassembler(codec *Codec, cfg ReassemblyConfig) *Reassembler {
	cfg.fill()
	return &Reassembler{
		codec:     codec,
		cfg:       cfg,
		byKey:     make(map[reasmKey]*reasm),
		order:     list.New(),
		perSource: make(map[mac.Addr]int),
	}
}

// Counters returns a snapshot of the counters.
func (r *Reassembler) Counters() Counters {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// Input takes the MAC payload of one frame from llSrc to llDst. It returns
// the IPv6 packet when one is complete, nil with a nil error when a
// fragment was stored and more are needed, or an error for a payload it
// drops. The packet is valid until the next call to Input.
//
// Dispatches accepted: LOWPAN_IPHC, uncompressed IPv6 (RFC 4944 §5.1) and
// FRAG1/FRAGN carrying either. Mesh and broadcast headers are
// ErrUnsupported.
func (r *Reassembler) Input(payload []byte, llSrc, llDst mac.Addr) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	r.expire(now)
	if len(payload) == 0 {
		r.c.Malformed++
		return nil, fmt.Errorf("sixlowpan: reassembly: empty payload: %w", ErrTruncated)
	}
	switch d := payload[0]; {
	case d&0xF8 == DispatchFrag1, d&0xF8 == DispatchFragN:
		pkt, err := r.fragment(payload, llSrc, llDst, now)
		if err != nil {
			return nil, err
		}
		if pkt != nil {
			r.c.Datagrams++
		}
		return pkt, nil
	case d == DispatchIPv6:
		r.scratch = append(r.scratch[:0], payload[1:]...)
	case d&0xE0 == DispatchIPHC:
		hdr, n, err := r.codec.AppendDecompressed(r.scratch[:0], payload, llSrc, llDst, 0)
		if err != nil {
			r.c.Malformed++
			return nil, err
		}
		r.scratch = append(hdr, payload[n:]...)
	default:
		r.c.Malformed++
		return nil, fmt.Errorf("sixlowpan: reassembly: dispatch %#02x: %w", d, ErrUnsupported)
	}
	r.c.Datagrams++
	return r.scratch, nil
}

// Expire drops reassemblies older than the timeout. Input does this too;
// a caller with idle periods may call it to release memory sooner.
func (r *Reassembler) Expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.cfg.Now())
}

func (r *Reassembler) expire(now time.Time) {
	for e := r.order.Front(); e != nil; e = r.order.Front() {
		ra := e.Value.(*reasm)
		if now.Sub(ra.start) < r.cfg.Timeout {
			return
		}
		r.drop(ra)
		r.c.Timeouts++
	}
}

func (r *Reassembler) drop(ra *reasm) {
	r.order.Remove(ra.elem)
	delete(r.byKey, ra.key)
	n := len(ra.buf)
	r.c.BytesHeld -= n
	if r.perSource[ra.key.src] -= n; r.perSource[ra.key.src] <= 0 {
		delete(r.perSource, ra.key.src)
	}
	r.c.Pending = len(r.byKey)
}

func (r *Reassembler) fragment(b []byte, llSrc, llDst mac.Addr, now time.Time) ([]byte, error) {
	first := b[0]&0xF8 == DispatchFrag1
	hl := FragNHeaderLen
	if first {
		hl = Frag1HeaderLen
	}
	if len(b) <= hl {
		r.c.Malformed++
		return nil, fmt.Errorf("sixlowpan: reassembly: fragment of %d octets: %w", len(b), ErrTruncated)
	}
	size := int(binary.BigEndian.Uint16(b) & 0x07ff)
	tag := binary.BigEndian.Uint16(b[2:])
	if size > MaxDatagram || size > r.cfg.MaxPerSource || size > r.cfg.MaxTotal {
		r.c.Rejected++
		return nil, fmt.Errorf("sixlowpan: reassembly: datagram_size %d: %w", size, ErrTooLarge)
	}
	if size < IPv6HeaderLen {
		r.c.Malformed++
		return nil, fmt.Errorf("sixlowpan: reassembly: datagram_size %d: %w", size, ErrMalformed)
	}

	// Place the fragment: FRAG1 decompresses its headers at offset 0, a
	// FRAGN carries uncompressed octets at datagram_offset*8.
	var off int
	var hdr []byte
	data := b[hl:]
	if first {
		var hb [IPv6HeaderLen + UDPHeaderLen]byte
		h, n, err := r.codec.AppendDecompressed(hb[:0], data, llSrc, llDst, size)
		if err != nil {
			r.c.Malformed++
			return nil, err
		}
		hdr, data = h, data[n:]
	} else {
		off = int(b[4]) * 8
	}
	end := off + len(hdr) + len(data)
	if end > size || end == off {
		r.c.Malformed++
		return nil, fmt.Errorf("sixlowpan: reassembly: fragment %d-%d of %d: %w", off, end, size, ErrMalformed)
	}

	key := reasmKey{src: llSrc, dst: llDst, size: uint16(size), tag: tag}
	ra := r.byKey[key]
	if ra != nil {
		sp := span{uint16(off), uint16(end)}
		for _, s := range ra.spans {
			if s.off < sp.end && sp.off < s.end {
				if s == sp {
					r.c.Duplicates++
					return nil, nil
				}
				// §5.3: an overlap that differs in offset or size discards
				// what was accumulated; start afresh with this fragment.
				r.c.Overlaps++
				ra.spans = ra.spans[:0]
				ra.have = 0
				ra.start = now
				r.order.MoveToBack(ra.elem)
				break
			}
		}
	} else {
		ra = r.admit(key, now)
	}
	copy(ra.buf[copy(ra.buf[off:], hdr)+off:], data)
	ra.spans = append(ra.spans, span{uint16(off), uint16(end)})
	ra.have += end - off
	r.c.Fragments++
	if ra.have < size {
		return nil, nil
	}
	r.drop(ra)
	r.c.Reassembled++
	return ra.buf, nil
}

// admit starts a reassembly, first dropping the oldest ones of the same
// source, then the oldest of all, until the caps leave room for it.
func (r *Reassembler) admit(key reasmKey, now time.Time) *reasm {
	size := int(key.size)
	for e := r.order.Front(); e != nil && r.perSource[key.src]+size > r.cfg.MaxPerSource; {
		next := e.Next()
		if ra := e.Value.(*reasm); ra.key.src == key.src {
			r.drop(ra)
			r.c.Evicted++
		}
		e = next
	}
	for r.order.Len() > 0 && (r.c.BytesHeld+size > r.cfg.MaxTotal || len(r.byKey) >= r.cfg.MaxDatagrams) {
		r.drop(r.order.Front().Value.(*reasm))
		r.c.Evicted++
	}
	ra := &reasm{key: key, buf: make([]byte, size), start: now}
	ra.elem = r.order.PushBack(ra)
	r.byKey[key] = ra
	r.perSource[key.src] += size
	r.c.BytesHeld += size
	r.c.PeakHeld = max(r.c.PeakHeld, r.c.BytesHeld)
	r.c.Pending = len(r.byKey)
	return ra
}
