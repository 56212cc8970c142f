package sixlowpan

import (
	"encoding/binary"
	"fmt"

	"github.com/opaque-edge/gatewayd/radio/mac"
)

// Fragment header lengths (RFC 4944 §5.3).
const (
	Frag1HeaderLen = 4
	FragNHeaderLen = 5
)

// Fragment compresses the IPv6 packet pkt and splits it into MAC payloads
// of at most maxPayload octets each, appended to frames in sending order.
//
// If the compressed packet fits one frame it is sent whole. Otherwise it is
// fragmented per RFC 4944 §5.3: a FRAG1 carrying the compressed headers and
// the first part of the payload, then FRAGNs, all tagged tag, with
// datagram_size and datagram_offset counted in octets of the uncompressed
// packet (RFC 6282 §2), every fragment but the last a multiple of 8
// octets of it.
//
// The payloads are slices of one buffer: buf is used when its capacity
// suffices, otherwise a new one is allocated. They alias neither pkt nor
// each other.
func (c *Codec) Fragment(frames [][]byte, buf []byte, pkt []byte, llSrc, llDst mac.Addr, maxPayload int, tag uint16) ([][]byte, error) {
	if len(pkt) > MaxDatagram {
		return frames, fmt.Errorf("sixlowpan: fragment: %d octets: %w", len(pkt), ErrTooLarge)
	}
	var hb [CompressedHeaderMax]byte
	hdr, covered, err := c.AppendCompressed(hb[:0], pkt, llSrc, llDst)
	if err != nil {
		return frames, err
	}
	rest := pkt[covered:]
	if len(hdr)+len(rest) <= maxPayload {
		b := take(buf, len(hdr)+len(rest))
		copy(b[copy(b, hdr):], rest)
		return append(frames, b), nil
	}
	// The first fragment carries the compressed header and as much payload
	// as keeps the next offset, in uncompressed octets, a multiple of 8.
	first := (maxPayload - Frag1HeaderLen - len(hdr) + covered) &^ 7
	first -= covered
	per := (maxPayload - FragNHeaderLen) &^ 7
	if first < 0 || per <= 0 {
		return frames, fmt.Errorf("sixlowpan: fragment: %d octets per frame: %w", maxPayload, ErrFrameSmall)
	}
	if first > len(rest) {
		first = len(rest) // cannot happen when it did not fit whole; kept for safety
	}
	nfrag := 1 + (len(rest)-first+per-1)/per
	total := Frag1HeaderLen + len(hdr) + len(rest) + (nfrag-1)*FragNHeaderLen
	b := take(buf, total)
	size := len(pkt)

	n := Frag1HeaderLen + len(hdr) + first
	f := b[:n:n]
	binary.BigEndian.PutUint16(f, uint16(DispatchFrag1)<<8|uint16(size))
	binary.BigEndian.PutUint16(f[2:], tag)
	copy(f[Frag1HeaderLen+copy(f[Frag1HeaderLen:], hdr):], rest[:first])
	frames = append(frames, f)
	b = b[n:]
	for off := first; off < len(rest); off += per {
		k := min(per, len(rest)-off)
		n := FragNHeaderLen + k
		f := b[:n:n]
		binary.BigEndian.PutUint16(f, uint16(DispatchFragN)<<8|uint16(size))
		binary.BigEndian.PutUint16(f[2:], tag)
		f[4] = byte((covered + off) / 8)
		copy(f[FragNHeaderLen:], rest[off:off+k])
		frames = append(frames, f)
		b = b[n:]
	}
	return frames, nil
}

// take returns n octets of buf's storage, or a new slice if it is short.
func take(buf []byte, n int) []byte {
	if cap(buf) >= n {
		return buf[:n]
	}
	return make([]byte, n)
}
